//! Tool calls in a model's reply, as structured calls: Qwen/Hermes `<tool_call>{...}</tool_call>`
//! blocks, Llama 3's JSON (`{"name": ..., "parameters": ...}`, after `<|python_tag|>` or
//! alone), and — when tools were offered — a reply that is nothing but such JSON objects,
//! which small models produce instead of the template's tags.

use serde_json::Value;

/// One call: the function's name and its arguments (a JSON object).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Value,
}

impl ToolCall {
    /// The OpenAI / chat-template form: `{"type": "function", "function": {"name", "arguments"}}`.
    pub fn to_message_value(&self) -> Value {
        serde_json::json!({
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

/// A reply split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedReply {
    /// The text outside the calls (trimmed).
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

/// Finds the tool calls in `text`. Without `tools_offered`, only explicit markers
/// (`<tool_call>` tags, `<|python_tag|>`) count: a reply that merely contains JSON is text.
pub fn parse_tool_calls(text: &str, tools_offered: bool) -> ParsedReply {
    if text.contains("<tool_call>") {
        return parse_tagged(text);
    }
    if let Some(rest) = text.split_once("<|python_tag|>") {
        let calls = json_calls(rest.1);
        if let Some(calls) = calls {
            return ParsedReply {
                content: rest.0.trim().to_string(),
                tool_calls: calls,
            };
        }
    }
    if tools_offered {
        if let Some(calls) = json_calls(strip_fence(text.trim())) {
            return ParsedReply {
                content: String::new(),
                tool_calls: calls,
            };
        }
    }
    ParsedReply {
        content: text.trim().to_string(),
        tool_calls: Vec::new(),
    }
}

/// `<tool_call>...</tool_call>` blocks (a last one may lack its closing tag when generation
/// stopped on it); the text between them is the content. Blocks that are not a call stay
/// in the content.
fn parse_tagged(text: &str) -> ParsedReply {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        content.push_str(&rest[..start]);
        let after = &rest[start + "<tool_call>".len()..];
        let (body, next) = match after.find("</tool_call>") {
            Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
            None => (after, ""),
        };
        match json_calls(body) {
            Some(mut c) => calls.append(&mut c),
            None => content.push_str(&rest[start..rest.len() - next.len()]),
        }
        rest = next;
    }
    content.push_str(rest);
    ParsedReply {
        content: content.trim().to_string(),
        tool_calls: calls,
    }
}

/// A ```json fence around the whole reply.
fn strip_fence(text: &str) -> &str {
    text.strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .map_or(text, str::trim)
}

/// `text` as one or more call objects (a JSON array, or objects one after another,
/// optionally separated by `;` or `,`); `None` if anything else is in it.
fn json_calls(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match stream.next()? {
            Ok(Value::Array(items)) if !items.is_empty() => {
                for item in items {
                    calls.push(call(item)?);
                }
            }
            Ok(v) => calls.push(call(v)?),
            Err(_) => return None,
        }
        rest = rest[stream.byte_offset()..].trim_start();
        if let Some(r) = rest.strip_prefix([';', ',']) {
            rest = r.trim_start();
        }
    }
    (!calls.is_empty()).then_some(calls)
}

/// `{"name": ..., "arguments"|"parameters": {...}}` (arguments may be a JSON string).
fn call(v: Value) -> Option<ToolCall> {
    let obj = v.as_object()?;
    let name = obj.get("name")?.as_str()?.to_string();
    let args = obj
        .get("arguments")
        .or_else(|| obj.get("parameters"))
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    let arguments = match args {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    };
    let known = ["name", "arguments", "parameters", "type", "id"];
    if obj.keys().any(|k| !known.contains(&k.as_str())) {
        return None;
    }
    Some(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather(city: &str) -> ToolCall {
        ToolCall {
            name: "get_weather".into(),
            arguments: json!({ "city": city }),
        }
    }

    #[test]
    fn hermes_tags_with_text_around() {
        let r = parse_tool_calls(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}\n</tool_call>",
            false,
        );
        assert_eq!(r.tool_calls, vec![weather("Berlin"), weather("Paris")]);
        assert_eq!(r.content, "Let me check.");
    }

    #[test]
    fn unclosed_last_tag_and_broken_json() {
        let r = parse_tool_calls(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}",
            false,
        );
        assert_eq!(r.tool_calls, vec![weather("Rome")]);
        let r = parse_tool_calls("<tool_call>{not json</tool_call> ok", false);
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.content, "<tool_call>{not json</tool_call> ok");
    }

    #[test]
    fn llama3_json_and_python_tag() {
        let r = parse_tool_calls(
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            true,
        );
        assert_eq!(r.tool_calls, vec![weather("Oslo")]);
        let r = parse_tool_calls(
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            false,
        );
        assert_eq!(r.tool_calls, vec![weather("Oslo")]);
    }

    #[test]
    fn bare_objects_count_only_when_tools_were_offered() {
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_tool_calls(text, true).tool_calls,
            vec![weather("Berlin"), weather("Paris")]
        );
        assert!(parse_tool_calls(text, false).tool_calls.is_empty());
        let fenced =
            "```json\n[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}]\n```";
        assert_eq!(
            parse_tool_calls(fenced, true).tool_calls,
            vec![weather("Berlin")]
        );
        let sep = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Berlin\"}}; {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_tool_calls(sep, true).tool_calls,
            vec![weather("Berlin"), weather("Paris")]
        );
        // JSON that is not a call, or a call followed by prose, is text.
        for text in [
            "{\"city\": \"Berlin\"}",
            "{\"name\": \"x\", \"arguments\": {}} and more",
            "[1, 2]",
        ] {
            let r = parse_tool_calls(text, true);
            assert!(r.tool_calls.is_empty(), "{text}");
            assert_eq!(r.content, text);
        }
    }
}
