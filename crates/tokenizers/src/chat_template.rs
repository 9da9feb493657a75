//! Chat templates rendered with minijinja, configured to behave as transformers' Jinja
//! environment: trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
//! `strftime_now`, a `tojson` that is Python's `json.dumps(ensure_ascii=False)`, Python
//! string methods, and values printed as Python's `str()` prints them.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, TokenizerError};
use crate::pyjson::{dumps, float_repr, DumpOptions};

/// One message of a conversation. Extra fields (`tool_calls`, `name`, `tool_call_id`, ...)
/// pass through to the template untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, a list of content parts, or absent.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Value::String(content.into()),
            extra: Map::new(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
    /// A tool's result, answering the call `tool_call_id` when the template uses ids.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
    /// An assistant turn that calls tools; each call is `{"type": "function", "function":
    /// {"name": ..., "arguments": {...}}}` as in transformers' tool-use docs.
    pub fn assistant_tool_calls(content: Option<String>, tool_calls: Vec<Value>) -> Self {
        let mut extra = Map::new();
        extra.insert("tool_calls".into(), Value::Array(tool_calls));
        Self {
            role: "assistant".into(),
            content: content.map_or(Value::Null, Value::String),
            extra,
        }
    }
}

/// Options of `apply_chat_template`, named as transformers names them.
#[derive(Debug, Clone, Default)]
pub struct ChatTemplateOptions {
    /// Append the tokens that open an assistant turn.
    pub add_generation_prompt: bool,
    /// Leave the final (assistant) message open so the model continues it.
    pub continue_final_message: bool,
    /// Tool definitions as JSON schemas (`{"type": "function", "function": {...}}`).
    pub tools: Option<Vec<Value>>,
    /// Documents for retrieval-augmented templates (`{"title": ..., "text": ...}`).
    pub documents: Option<Vec<Value>>,
    /// A template text to use instead of the model's, or the name of one of its named templates.
    pub chat_template: Option<String>,
    /// What errors call an override template (its file name, say); default "custom".
    pub chat_template_name: Option<String>,
    /// More variables for the template.
    pub extra_context: Map<String, Value>,
}

impl ChatTemplateOptions {
    /// The usual options for prompting a model: add the generation prompt.
    pub fn generation_prompt() -> Self {
        Self {
            add_generation_prompt: true,
            ..Self::default()
        }
    }
}

/// Checks the shape of `messages` and names the first field at fault. Content may be
/// anything a template reads (a string, a list of parts, a mapping).
pub fn validate_messages(messages: &[Value]) -> Result<()> {
    for (i, m) in messages.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| TokenizerError::Messages(format!("messages[{i}] is not an object")))?;
        match obj.get("role") {
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(TokenizerError::Messages(format!(
                    "messages[{i}].role is not a string"
                )))
            }
            None => {
                return Err(TokenizerError::Messages(format!(
                    "messages[{i}] has no `role`"
                )))
            }
        }
        if let Some(calls) = obj.get("tool_calls") {
            if !calls.is_array() && !calls.is_null() {
                return Err(TokenizerError::Messages(format!(
                    "messages[{i}].tool_calls is not a list"
                )));
            }
        }
    }
    Ok(())
}

/// Appended to the final message by `continue_final_message`, to find where it ends.
const CONTINUE_TAG: &str = "CONTINUE_FINAL_MESSAGE_TAG ";
/// Names under which reasoning text reaches templates; transformers fills all from any.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// Renders `source` (named `name` in errors) for `messages`, as transformers'
/// `render_jinja_template`. `special_tokens` are the tokenizer's named tokens
/// (`bos_token`, `eos_token`, ...).
pub fn render(
    name: &str,
    source: &str,
    messages: &[Value],
    opts: &ChatTemplateOptions,
    special_tokens: &Map<String, Value>,
) -> Result<String> {
    validate_messages(messages)?;
    if messages.is_empty() {
        return Err(TokenizerError::Messages(
            "the conversation is empty; give at least one message".into(),
        ));
    }
    if opts.continue_final_message && opts.add_generation_prompt {
        return Err(TokenizerError::InvalidArgument {
            param: "continue_final_message",
            msg: "cannot be combined with add_generation_prompt: one continues the last message, \
                  the other opens a new one"
                .into(),
        });
    }
    let mut chat = normalize_messages(messages);
    let final_text = if opts.continue_final_message {
        Some(tag_final_message(&mut chat, source)?)
    } else {
        None
    };

    let env = environment();
    let source = rewrite_generation_tags(source);
    let tmpl = env
        .template_from_named_str(name, &source)
        .map_err(|e| template_error(name, &e))?;

    let mut ctx = special_tokens.clone();
    for (k, v) in &opts.extra_context {
        ctx.insert(k.clone(), v.clone());
    }
    ctx.insert("messages".into(), Value::Array(chat));
    ctx.insert(
        "tools".into(),
        opts.tools.clone().map_or(Value::Null, Value::Array),
    );
    ctx.insert(
        "documents".into(),
        opts.documents.clone().map_or(Value::Null, Value::Array),
    );
    ctx.insert(
        "add_generation_prompt".into(),
        Value::Bool(opts.add_generation_prompt),
    );
    let rendered = tmpl
        .render(JinjaValue::from_serialize(&ctx))
        .map_err(|e| template_error(name, &e))?;
    match final_text {
        Some(final_text) => cut_at_continue_tag(rendered, &final_text),
        None => Ok(rendered),
    }
}

/// transformers drops keys whose value is None (OpenAI-style `content: null`) and copies
/// reasoning text under each of its names.
fn normalize_messages(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let Some(obj) = m.as_object() else {
                return m.clone();
            };
            let mut out: Map<String, Value> = obj
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(reasoning) = REASONING_FIELDS.iter().find_map(|k| out.get(*k).cloned()) {
                let mut aliased = Map::new();
                aliased.insert("thinking".into(), reasoning.clone());
                aliased.extend(out);
                aliased.insert("reasoning_content".into(), reasoning);
                out = aliased;
            }
            Value::Object(out)
        })
        .collect()
}

/// Marks the end of the final message's text with `CONTINUE_TAG`; returns the text.
fn tag_final_message(chat: &mut [Value], source: &str) -> Result<String> {
    let bad = |msg: &str| TokenizerError::InvalidArgument {
        param: "continue_final_message",
        msg: msg.into(),
    };
    let last = chat
        .last_mut()
        .ok_or_else(|| bad("the conversation is empty"))?;
    let content = last
        .get_mut("content")
        .ok_or_else(|| bad("the final message has no content to continue"))?;
    if !source.contains("content") {
        return Err(bad(
            "the chat template does not read `content`, so there is nothing to continue",
        ));
    }
    let text = match content {
        Value::String(s) => s,
        Value::Array(parts) => parts
            .iter_mut()
            .rev()
            .find_map(|p| p.get_mut("text"))
            .and_then(|t| match t {
                Value::String(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| bad("the final message has no text part to continue"))?,
        _ => return Err(bad("the final message has no content to continue")),
    };
    let original = text.clone();
    text.push_str(CONTINUE_TAG);
    Ok(original)
}

/// Cuts the prompt where the final message ends, keeping its trailing whitespace only
/// if the template kept it.
fn cut_at_continue_tag(rendered: String, final_text: &str) -> Result<String> {
    let tag = CONTINUE_TAG.trim_end();
    let stripped = final_text.trim_matches(py_whitespace);
    let (Some(loc), true) = (rendered.rfind(tag), rendered.contains(stripped)) else {
        return Err(TokenizerError::InvalidArgument {
            param: "continue_final_message",
            msg:
                "the final message does not appear in the rendered prompt; the template changes it"
                    .into(),
        });
    };
    let kept_spacing = rendered[loc..].starts_with(CONTINUE_TAG);
    let mut out = rendered;
    out.truncate(loc);
    if !kept_spacing {
        let end = out.trim_end_matches(py_whitespace).len();
        out.truncate(end);
    }
    Ok(out)
}

/// Python's `str.strip()` whitespace.
fn py_whitespace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}')
}

/// transformers' `{% generation %}` blocks only mark assistant text for masks; rendering
/// ignores them. Rewriting them as an always-true `if` keeps whitespace control identical.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("%}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let word = inner.trim_matches(|c: char| c.is_whitespace() || c == '-' || c == '+');
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
                let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
                let _ = write!(out, "{{%{lead} {r} {trail}%}}");
            }
            None => {
                out.push_str("{%");
                out.push_str(inner);
                out.push_str("%}");
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn template_error(name: &str, e: &JinjaError) -> TokenizerError {
    let msg = match e.detail() {
        Some(d) if e.kind() == ErrorKind::InvalidOperation => d.to_string(),
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    TokenizerError::Template {
        template: name.to_string(),
        line: e.line(),
        msg,
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        out.write_str(&py_str(value))?;
        Ok(())
    });
    env.add_filter("tojson", tojson);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

fn raise_exception(message: String) -> std::result::Result<JinjaValue, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> std::result::Result<JinjaValue, JinjaError> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item> = StrftimeItems::new(&format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        ));
    }
    Ok(JinjaValue::from(
        chrono::Local::now()
            .format_with_items(items.into_iter())
            .to_string(),
    ))
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<JinjaValue, JinjaError> {
    let bad = |msg: String| JinjaError::new(ErrorKind::InvalidOperation, msg);
    let indent = match kwargs.get::<Option<JinjaValue>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) if v.kind() == ValueKind::Number => Some(" ".repeat(n.max(0) as usize)),
            _ => Some(
                v.as_str()
                    .ok_or_else(|| bad("tojson: indent must be an int or a string".into()))?
                    .to_string(),
            ),
        },
    };
    let mut opts = DumpOptions::new(indent);
    if let Some(a) = kwargs.get::<Option<bool>>("ensure_ascii")? {
        opts.ensure_ascii = a;
    }
    if let Some(s) = kwargs.get::<Option<bool>>("sort_keys")? {
        opts.sort_keys = s;
    }
    if let Some(seps) = kwargs.get::<Option<Vec<String>>>("separators")? {
        let [item, key]: [String; 2] = seps
            .try_into()
            .map_err(|_| bad("tojson: separators must be a pair of strings".into()))?;
        opts.item_separator = item;
        opts.key_separator = key;
    }
    kwargs.assert_all_used()?;
    if value.is_undefined() {
        return Err(bad("tojson: the value is undefined".into()));
    }
    let json = serde_json::to_value(&value).map_err(|e| bad(format!("tojson: {e}")))?;
    Ok(JinjaValue::from_safe_string(dumps(&json, &opts)))
}

/// How Python's `str()` prints a value that Jinja writes into the output.
fn py_str(value: &JinjaValue) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_string(),
        _ => py_repr(value),
    }
}

/// Python's `repr()` of a value (strings quoted), used inside containers.
fn py_repr(value: &JinjaValue) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => "None".into(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.into(),
        ValueKind::Number => match serde_json::to_value(value) {
            Ok(Value::Number(n)) if n.is_f64() => float_repr(n.as_f64().unwrap_or_default(), false),
            _ => value.to_string(),
        },
        ValueKind::String => py_quote(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<String> = value
                .try_iter()
                .into_iter()
                .flatten()
                .map(|v| py_repr(&v))
                .collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = value
                .try_iter()
                .into_iter()
                .flatten()
                .map(|k| {
                    let v = value.get_item(&k).unwrap_or_default();
                    format!("{}: {}", py_repr(&k), py_repr(&v))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Python's quoting of a string in `repr`: single quotes unless the text has a single
/// quote and no double quote.
fn py_quote(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Renders with `messages`, or one placeholder message when given none.
    fn render_simple(src: &str, messages: Value) -> Result<String> {
        let mut msgs = messages.as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            msgs.push(json!({"role": "user", "content": ""}));
        }
        render(
            "test",
            src,
            &msgs,
            &ChatTemplateOptions::default(),
            &Map::new(),
        )
    }

    #[test]
    fn python_printing_and_tojson() {
        let src = "{{ none }}{{ messages[0].x }}|{{ messages[0].y }}|{{ messages[0].z }}|{{ messages[0].l }}|{{ messages[0].f }}|{{ messages[0].d | tojson }}|{{ messages[0].d | tojson(indent=2) }}";
        let out = render_simple(
            src,
            json!([{"role": "user", "x": null, "y": true, "z": false, "l": ["a", 1, 2.5, null], "f": 2.0,
                    "d": {"b": "é\n", "a": [1, 1e-05]}}]),
        )
        .unwrap();
        assert_eq!(
            out,
            "None|True|False|['a', 1, 2.5, None]|2.0|{\"b\": \"é\\n\", \"a\": [1, 1e-05]}|{\n  \"b\": \"é\\n\",\n  \"a\": [\n    1,\n    1e-05\n  ]\n}"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_and_trailing_newline() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let out = render_simple(
            src,
            json!([{"role": "user", "content": "hi"}, {"role": "x"}]),
        )
        .unwrap();
        assert_eq!(out, "U:hi\n");
    }

    #[test]
    fn raise_exception_names_template_and_line() {
        let src = "ok\n{{ raise_exception('Roles must alternate') }}";
        let e = render_simple(src, json!([])).unwrap_err().to_string();
        assert_eq!(e, "chat template `test` line 2: Roles must alternate");
        let e = render_simple("{% for %}", json!([]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("chat template `test` line 1: syntax error"),
            "{e}"
        );
    }

    #[test]
    fn generation_tags_are_transparent() {
        let src =
            "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}";
        assert_eq!(
            render_simple(src, json!([{"role": "a", "content": "x"}])).unwrap(),
            "x"
        );
        assert_eq!(
            rewrite_generation_tags("{%- generation -%}"),
            "{%- if true -%}"
        );
    }

    #[test]
    fn continue_final_message_cuts_after_content() {
        let src = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>\n{% endfor %}";
        let msgs = vec![
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "content": "The answer is "}),
        ];
        let opts = ChatTemplateOptions {
            continue_final_message: true,
            ..Default::default()
        };
        let out = render("t", src, &msgs, &opts, &Map::new()).unwrap();
        assert_eq!(out, "<user>q</s>\n<assistant>The answer is ");
        let trimming =
            "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}</s>{% endfor %}";
        let out = render("t", trimming, &msgs, &opts, &Map::new()).unwrap();
        assert_eq!(out, "<user>q</s><assistant>The answer is");
        let both = ChatTemplateOptions {
            add_generation_prompt: true,
            ..opts
        };
        assert!(render("t", src, &msgs, &both, &Map::new()).is_err());
    }

    #[test]
    fn strftime_now_formats_and_rejects_bad_formats() {
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(
            render_simple("{{ strftime_now('%Y') }}", json!([])).unwrap(),
            year
        );
        assert!(render_simple("{{ strftime_now('%Q') }}", json!([])).is_err());
    }

    #[test]
    fn messages_are_validated() {
        for (bad, want) in [
            (json!([1]), "messages[0] is not an object"),
            (json!([{"content": "x"}]), "messages[0] has no `role`"),
            (
                json!([{"role": "user", "tool_calls": 3}]),
                "messages[0].tool_calls is not a list",
            ),
            (
                json!([{"role": "user"}, {"role": 2}]),
                "messages[1].role is not a string",
            ),
        ] {
            let e = render_simple("x", bad).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
