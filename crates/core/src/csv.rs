//! CSV as datasets and pipeline inputs use it (RFC 4180): comma-separated fields, double
//! quotes around a field that holds commas, quotes (doubled) or line breaks.

/// The records of `text`, each a list of fields; blank lines are skipped. An unterminated
/// quote is an error giving the line it opened on.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut line, mut opened_at) = (false, 1usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => {
                quoted = true;
                opened_at = line;
            }
            (',', false) => record.push(std::mem::take(&mut field)),
            ('\r', false) if chars.peek() == Some(&'\n') => {}
            ('\n', false) => {
                line += 1;
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
            }
            (c, _) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if quoted {
        return Err(format!(
            "a quoted field opened on line {opened_at} never closes"
        ));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let text = "text,label\n\"a, b\",1\r\n\"say \"\"hi\"\"\",0\n\n\"two\nlines\",1";
        let rows = parse(text).unwrap_or_default();
        assert_eq!(
            rows,
            [
                vec!["text", "label"],
                vec!["a, b", "1"],
                vec!["say \"hi\"", "0"],
                vec!["two\nlines", "1"]
            ]
        );
        assert!(parse("a\n\"open,1\n").unwrap_err().contains("line 2"));
    }
}
