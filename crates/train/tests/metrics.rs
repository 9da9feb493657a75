//! Every number of tests/fixtures/training/metrics.json (made by scripts/make_metric_refs.py
//! with sacrebleu 2.6.0, rouge-score 0.1.2 + nltk 3.10.4, scikit-learn 1.9.1, seqeval 1.2.2),
//! recomputed in Rust.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;

use ferro_train::metrics::classification::{self, Average, PrfOptions};
use ferro_train::metrics::seqeval::{self, Mode, Scheme, SeqevalOptions};
use ferro_train::metrics::{
    corpus_bleu, sentence_bleu, BleuOptions, BleuScore, RougeScorer, RougeType,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/training/metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing metric references {} ({e}); regenerate with scripts/make_metric_refs.py",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Equal to the reference's 12 significant digits (and so within 1e-6).
fn close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * want.abs() + 1e-12;
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    arr(v).iter().map(|x| s(x).to_string()).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    arr(v).iter().map(|x| x.as_i64().unwrap()).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    arr(v).iter().map(f).collect()
}

fn close_all(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        close(*g, *w, &format!("{what}[{i}]"));
    }
}

fn check_bleu(got: &BleuScore, want: &Value, what: &str) {
    close(got.score, f(&want["score"]), &format!("{what} score"));
    let counts: Vec<u64> = arr(&want["counts"]).iter().map(u).collect();
    let totals: Vec<u64> = arr(&want["totals"]).iter().map(u).collect();
    assert_eq!(got.counts, counts, "{what} counts");
    assert_eq!(got.totals, totals, "{what} totals");
    close_all(
        &got.precisions,
        &floats(&want["precisions"]),
        &format!("{what} precisions"),
    );
    close(got.bp, f(&want["bp"]), &format!("{what} bp"));
    assert_eq!(got.sys_len, u(&want["sys_len"]), "{what} sys_len");
    assert_eq!(got.ref_len, u(&want["ref_len"]), "{what} ref_len");
}

#[test]
fn bleu_equals_sacrebleu() {
    let fx = fixture();
    let bleu = &fx["bleu"];
    let hyps = strings(&bleu["inputs"]["hypotheses"]);
    let streams: Vec<Vec<Option<String>>> = arr(&bleu["inputs"]["references"])
        .iter()
        .map(|stream| {
            arr(stream)
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .collect();
    assert!(
        streams.iter().flatten().any(Option::is_none),
        "the fixture has missing references"
    );

    let corpus = corpus_bleu(&hyps, &streams, &BleuOptions::default()).unwrap();
    check_bleu(&corpus, &bleu["corpus"], "corpus");

    let lowercase = BleuOptions {
        lowercase: true,
        ..Default::default()
    };
    let corpus_lc = corpus_bleu(&hyps, &streams, &lowercase).unwrap();
    check_bleu(&corpus_lc, &bleu["corpus_lowercase"], "corpus_lowercase");

    let sentences = arr(&bleu["sentence"]);
    assert_eq!(sentences.len(), hyps.len());
    for (i, want) in sentences.iter().enumerate() {
        let refs = strings(&want["references"]);
        let got = sentence_bleu(s(&want["hypothesis"]), &refs).unwrap();
        check_bleu(&got, want, &format!("sentence {i}"));
    }
}

#[test]
fn rouge_equals_rouge_score() {
    let fx = fixture();
    let rouge = &fx["rouge"];
    let names = strings(&rouge["rouge_types"]);
    assert_eq!(names, ["rouge1", "rouge2", "rougeL", "rougeLsum"]);
    let pairs = arr(&rouge["pairs"]);
    assert!(!pairs.is_empty());
    for (key, use_stemmer) in [("no_stemmer", false), ("stemmer", true)] {
        let scorer = RougeScorer::from_names(&names, use_stemmer).unwrap();
        for (i, pair) in pairs.iter().enumerate() {
            let prediction = s(&pair["prediction"]);
            let targets = strings(&pair["targets"]);
            let want = &pair[key];
            let what = format!("{key} pair {i}");

            assert_eq!(
                scorer.tokenize(prediction),
                strings(&want["tokens"]["prediction"]),
                "{what} prediction tokens"
            );
            assert_eq!(
                scorer.tokenize(&targets[0]),
                strings(&want["tokens"]["first_target"]),
                "{what} target tokens"
            );

            let first = scorer.score(&targets[0], prediction);
            let multi = scorer.score_multi(&targets, prediction).unwrap();
            for (got_all, which) in [(&first, "first_target"), (&multi, "score_multi")] {
                assert_eq!(got_all.len(), names.len());
                for name in &names {
                    let got = got_all.get(name.parse::<RougeType>().unwrap()).unwrap();
                    let w = &want[which][name];
                    let ctx = format!("{what} {which} {name}");
                    close(
                        got.precision,
                        f(&w["precision"]),
                        &format!("{ctx} precision"),
                    );
                    close(got.recall, f(&w["recall"]), &format!("{ctx} recall"));
                    close(got.fmeasure, f(&w["fmeasure"]), &format!("{ctx} fmeasure"));
                }
            }
        }
    }
}

fn check_prf(got: &classification::Prf, want: &Value, what: &str) {
    close(
        got.precision,
        f(&want["precision"]),
        &format!("{what} precision"),
    );
    close(got.recall, f(&want["recall"]), &format!("{what} recall"));
    close(got.fbeta, f(&want["f1"]), &format!("{what} f1"));
}

fn matrix(v: &Value) -> Vec<Vec<u64>> {
    arr(v)
        .iter()
        .map(|row| arr(row).iter().map(u).collect())
        .collect()
}

#[test]
fn classification_equals_sklearn() {
    let fx = fixture();
    let cls = &fx["classification"];
    assert_eq!(u(&cls["zero_division"]), 0);
    let opts = PrfOptions::default();

    let multi = &cls["multiclass"];
    let (y_true, y_pred) = (ints(&multi["y_true"]), ints(&multi["y_pred"]));
    let labels = ints(&multi["labels"]);
    close(
        classification::accuracy_score(&y_true, &y_pred).unwrap(),
        f(&multi["accuracy"]),
        "accuracy",
    );
    for (average, key) in [
        (Average::Macro, "macro"),
        (Average::Micro, "micro"),
        (Average::Weighted, "weighted"),
    ] {
        let got =
            classification::precision_recall_fscore_support(&y_true, &y_pred, &average, &opts)
                .unwrap();
        check_prf(&got, &multi[key], key);
        let want = &multi[key];
        close(
            classification::precision_score(&y_true, &y_pred, &average, &opts).unwrap(),
            f(&want["precision"]),
            key,
        );
        close(
            classification::recall_score(&y_true, &y_pred, &average, &opts).unwrap(),
            f(&want["recall"]),
            key,
        );
        close(
            classification::f1_score(&y_true, &y_pred, &average, &opts).unwrap(),
            f(&want["f1"]),
            key,
        );
        // The same with the labels listed explicitly.
        let explicit = PrfOptions {
            labels: Some(labels.clone()),
            ..PrfOptions::default()
        };
        let got =
            classification::precision_recall_fscore_support(&y_true, &y_pred, &average, &explicit)
                .unwrap();
        check_prf(&got, &multi[key], &format!("{key} (explicit labels)"));
    }
    for o in [
        opts.clone(),
        PrfOptions {
            labels: Some(labels.clone()),
            ..PrfOptions::default()
        },
    ] {
        let per_class =
            classification::precision_recall_fscore_support_per_class(&y_true, &y_pred, &o)
                .unwrap();
        assert_eq!(per_class.labels, labels);
        let want = &multi["per_class"];
        close_all(
            &per_class.precision,
            &floats(&want["precision"]),
            "per_class precision",
        );
        close_all(
            &per_class.recall,
            &floats(&want["recall"]),
            "per_class recall",
        );
        close_all(&per_class.fbeta, &floats(&want["f1"]), "per_class f1");
        let support: Vec<u64> = arr(&multi["support"]).iter().map(u).collect();
        assert_eq!(per_class.support, support, "support");
    }
    let cm = classification::confusion_matrix(&y_true, &y_pred, None).unwrap();
    assert_eq!(cm.labels, labels);
    assert_eq!(
        cm.matrix,
        matrix(&multi["confusion_matrix"]),
        "confusion_matrix"
    );
    let cm = classification::confusion_matrix(&y_true, &y_pred, Some(&labels)).unwrap();
    assert_eq!(
        cm.matrix,
        matrix(&multi["confusion_matrix"]),
        "confusion_matrix (explicit labels)"
    );

    let binary = &cls["binary"];
    let (y_true, y_pred) = (ints(&binary["y_true"]), ints(&binary["y_pred"]));
    close(
        classification::accuracy_score(&y_true, &y_pred).unwrap(),
        f(&binary["accuracy"]),
        "binary accuracy",
    );
    let pos = Average::Binary { pos_label: 1 };
    let got =
        classification::precision_recall_fscore_support(&y_true, &y_pred, &pos, &opts).unwrap();
    check_prf(&got, &binary["binary"], "binary");
    let got =
        classification::precision_recall_fscore_support(&y_true, &y_pred, &Average::Macro, &opts)
            .unwrap();
    check_prf(&got, &binary["macro"], "binary macro");
    let cm = classification::confusion_matrix(&y_true, &y_pred, None).unwrap();
    assert_eq!(
        cm.matrix,
        matrix(&binary["confusion_matrix"]),
        "binary confusion_matrix"
    );
}

fn sequences(v: &Value) -> Vec<Vec<String>> {
    arr(v).iter().map(strings).collect()
}

fn check_entities(y: &[Vec<String>], mode: Mode, want: &Value, what: &str) {
    let want = arr(want);
    assert_eq!(want.len(), y.len(), "{what}: sequences");
    for (i, (seq, want_seq)) in y.iter().zip(want).enumerate() {
        let got: Vec<(String, u64, u64)> = seqeval::get_entities(seq, mode)
            .unwrap()
            .into_iter()
            .map(|e| (e.entity_type, e.start as u64, e.end as u64))
            .collect();
        let want: Vec<(String, u64, u64)> = arr(want_seq)
            .iter()
            .map(|e| {
                let e = arr(e);
                (s(&e[0]).to_string(), u(&e[1]), u(&e[2]))
            })
            .collect();
        assert_eq!(got, want, "{what} sequence {i}");
    }
}

#[test]
fn seqeval_equals_seqeval() {
    let fx = fixture();
    let sq = &fx["seqeval"];
    let y_true = sequences(&sq["y_true"]);
    let y_pred = sequences(&sq["y_pred"]);
    for (key, opts) in [
        ("default", SeqevalOptions::default()),
        ("strict", SeqevalOptions::strict(Scheme::Iob2)),
    ] {
        let want = &sq[key];
        close(
            seqeval::accuracy_score(&y_true, &y_pred).unwrap(),
            f(&want["accuracy"]),
            &format!("{key} accuracy"),
        );
        let micro = seqeval::Average::Micro;
        close(
            seqeval::precision_score(&y_true, &y_pred, micro, &opts).unwrap(),
            f(&want["precision"]),
            key,
        );
        close(
            seqeval::recall_score(&y_true, &y_pred, micro, &opts).unwrap(),
            f(&want["recall"]),
            key,
        );
        close(
            seqeval::f1_score(&y_true, &y_pred, micro, &opts).unwrap(),
            f(&want["f1"]),
            key,
        );

        let report = seqeval::classification_report(&y_true, &y_pred, &opts).unwrap();
        let want_report = want["report"].as_object().unwrap();
        let got_json = serde_json::to_value(&report).unwrap();
        let got_keys: Vec<&String> = got_json.as_object().unwrap().keys().collect();
        let want_keys: Vec<&String> = want_report.keys().collect();
        assert_eq!(got_keys, want_keys, "{key} report rows");
        for (row_name, w) in want_report {
            let got = report
                .get(row_name)
                .unwrap_or_else(|| panic!("{key} report has no row {row_name}"));
            let ctx = format!("{key} report {row_name}");
            close(
                got.precision,
                f(&w["precision"]),
                &format!("{ctx} precision"),
            );
            close(got.recall, f(&w["recall"]), &format!("{ctx} recall"));
            close(got.f1_score, f(&w["f1-score"]), &format!("{ctx} f1-score"));
            assert_eq!(got.support, u(&w["support"]), "{ctx} support");
        }

        check_entities(
            &y_true,
            opts.mode,
            &want["entities_true"],
            &format!("{key} entities_true"),
        );
        check_entities(
            &y_pred,
            opts.mode,
            &want["entities_pred"],
            &format!("{key} entities_pred"),
        );
    }
}
