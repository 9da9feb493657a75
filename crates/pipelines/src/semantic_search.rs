//! Semantic search: embed a corpus once, then return the passages nearest a query by
//! cosine similarity, as sentence-transformers' `util.semantic_search` ranks them.

use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::sentence_embeddings::SentenceTransformer;

/// One passage found for a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Its index in the corpus.
    pub corpus_id: usize,
    /// Cosine similarity to the query.
    pub score: f32,
    pub text: String,
}

pub struct SemanticSearch {
    model: SentenceTransformer,
    corpus: Vec<String>,
    /// The corpus' embeddings, scaled to unit length.
    embeddings: Vec<Vec<f32>>,
}

impl SemanticSearch {
    /// Embeds `corpus` with `model`, `batch_size` passages at a time.
    pub fn new(model: SentenceTransformer, corpus: Vec<String>, batch_size: usize) -> Result<Self> {
        if corpus.is_empty() {
            return Err(PipelineError::InvalidArgument {
                param: "corpus",
                msg: "give at least one passage to search".into(),
            });
        }
        let embeddings = model
            .encode(&corpus, batch_size)?
            .into_iter()
            .map(unit)
            .collect();
        Ok(Self {
            model,
            corpus,
            embeddings,
        })
    }

    pub fn corpus(&self) -> &[String] {
        &self.corpus
    }

    /// The `top_k` passages most similar to `query`, best first (ties: corpus order).
    pub fn search(&self, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        if top_k == 0 {
            return Err(PipelineError::InvalidArgument {
                param: "top_k",
                msg: "must be at least 1".into(),
            });
        }
        let q = unit(self.model.encode(&[query], 1)?.remove(0));
        let mut hits: Vec<Hit> = self
            .embeddings
            .iter()
            .enumerate()
            .map(|(corpus_id, e)| Hit {
                corpus_id,
                score: e.iter().zip(&q).map(|(a, b)| a * b).sum(),
                text: self.corpus[corpus_id].clone(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(top_k);
        Ok(hits)
    }
}

/// `v` scaled to unit length (a zero vector stays zero), as `util.cos_sim` normalizes.
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}
