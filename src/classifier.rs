//! The task classifier: which profile a chat request belongs to, read from the start of its last
//! user message with keyword and regex rules that are checked and compiled once, at configure time.

use std::borrow::Cow;
use std::str::Chars;

use regex_lite::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::json::Field;
use crate::config::ConfigError;

const DEFAULT_MAX_BYTES: u64 = 4096;
/// Classification runs on every request; past this it would cost more than it tells.
const MAX_MAX_BYTES: u64 = 1024 * 1024;
/// A rule needs far less than the default 10 MB per compiled regex, and the filter's memory
/// is shared with every other plugin in the VM.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_NEST_LIMIT: u32 = 64;

/// `classifier` in the router config. Keywords match case-insensitively in any script. Regexes
/// are `regex-lite`'s dialect (the `regex` crate's syntax at about a sixth of its wasm size): they
/// match any text, Korean included, but `(?i)`, `\w` and `\b` know only ASCII letters, and
/// `\p{..}` classes are refused. A rule whose words have case outside ASCII uses keywords.
#[derive(Debug)]
pub struct RawClassifier {
    max_bytes: u64,
    default: String,
    rules: Vec<RawRule>,
}

impl RawClassifier {
    pub fn read(f: Field) -> Result<RawClassifier, ConfigError> {
        let o = f.object(&["maxBytes", "default", "rules"])?;
        Ok(RawClassifier {
            max_bytes: o.or_else("maxBytes", |f| f.u64(), default_max_bytes)?,
            default: o.string("default")?,
            rules: o.or_else("rules", |f| f.items()?.iter().map(|r| RawRule::read(r.field())).collect(), Vec::new)?,
        })
    }
}

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

#[derive(Debug)]
struct RawRule {
    profile: String,
    keywords: Vec<String>,
    regex: Option<String>,
}

impl RawRule {
    fn read(f: Field) -> Result<RawRule, ConfigError> {
        let o = f.object(&["profile", "keywords", "regex"])?;
        Ok(RawRule {
            profile: o.string("profile")?,
            keywords: o.or_else("keywords", |f| f.strings(), Vec::new)?,
            regex: o.opt_string("regex")?,
        })
    }
}

#[derive(Debug)]
pub struct Classifier {
    max_bytes: usize,
    default: String,
    rules: Vec<Rule>,
}

/// Matches when any keyword or the regex does.
#[derive(Debug)]
struct Rule {
    profile: String,
    /// Lowercased, as the text is before it is searched.
    keywords: Vec<String>,
    regex: Option<Regex>,
}

impl Rule {
    fn matches(&self, text: &str, lowercased: &mut Option<String>) -> bool {
        if !self.keywords.is_empty() {
            let lower = lowercased.get_or_insert_with(|| text.to_lowercase());
            if self.keywords.iter().any(|k| lower.contains(k.as_str())) {
                return true;
            }
        }
        self.regex.as_ref().is_some_and(|r| r.is_match(text))
    }
}

impl Classifier {
    /// Errors are `(field, reason)`, the field spelled as in the plugin config
    /// (`classifier.rules[2].regex`).
    pub fn check(raw: RawClassifier, known_profiles: &dyn Fn(&str) -> bool) -> Result<Classifier, (String, String)> {
        let invalid = |field: String, reason: String| Err((field, reason));
        if raw.max_bytes == 0 || raw.max_bytes > MAX_MAX_BYTES {
            return invalid("classifier.maxBytes".into(), format!("must be between 1 and {MAX_MAX_BYTES}"));
        }
        let Ok(max_bytes) = usize::try_from(raw.max_bytes) else {
            return invalid("classifier.maxBytes".into(), "is too large".into());
        };
        if !known_profiles(&raw.default) {
            return invalid("classifier.default".into(), format!("profile `{}` is not in `profiles`", raw.default));
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let field = format!("classifier.rules[{i}]");
            if !known_profiles(&rule.profile) {
                return invalid(format!("{field}.profile"), format!("profile `{}` is not in `profiles`", rule.profile));
            }
            if rule.keywords.is_empty() && rule.regex.is_none() {
                return invalid(field, "needs `keywords`, `regex` or both".into());
            }
            let mut keywords = Vec::with_capacity(rule.keywords.len());
            for (j, keyword) in rule.keywords.iter().enumerate() {
                if keyword.trim().is_empty() {
                    return invalid(format!("{field}.keywords[{j}]"), "must not be blank: it would match every message".into());
                }
                keywords.push(keyword.to_lowercase());
            }
            let regex = match rule.regex.as_deref() {
                None => None,
                Some("") => return invalid(format!("{field}.regex"), "must not be empty: it would match every message".into()),
                Some(pattern) => match RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(REGEX_NEST_LIMIT)
                    .build()
                {
                    Ok(regex) => Some(regex),
                    Err(e) => return invalid(format!("{field}.regex"), format!("does not compile: {e}")),
                },
            };
            rules.push(Rule { profile: rule.profile, keywords, regex });
        }
        Ok(Classifier { max_bytes, default: raw.default, rules })
    }

    /// How much of a message is read.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The profile of the first rule that matches the first `maxBytes` of the text, else the default.
    pub fn classify(&self, last_user_text: &str) -> &str {
        let text = prefix(last_user_text, self.max_bytes);
        let mut lowercased = None;
        self.rules
            .iter()
            .find(|rule| rule.matches(text, &mut lowercased))
            .map_or(self.default.as_str(), |rule| rule.profile.as_str())
    }

    /// The profile of a raw chat request body: its last user message, read up to `maxBytes`.
    pub fn classify_body(&self, body: &[u8]) -> &str {
        match last_user_text(body, self.max_bytes) {
            Some(text) => self.classify(&text),
            None => &self.default,
        }
    }
}

/// The longest start of `text` that fits in `max_bytes` without splitting a character.
fn prefix(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[derive(Deserialize)]
struct Messages<'a> {
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct MessageHead<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// The text of the last `user` message of a chat request body (a string content, or its text
/// parts joined by newlines), at most `max_bytes` of it. Message contents stay raw JSON, and
/// only this one is unescaped, only as far as `max_bytes`: a 10 MB message costs a scan of the
/// JSON, not a 10 MB copy. `None` when there is no user message with text, or the body is not
/// a chat request.
pub fn last_user_text(body: &[u8], max_bytes: usize) -> Option<String> {
    let messages = serde_json::from_slice::<Messages>(body).ok()?.messages?;
    let content = messages.iter().rev().find_map(|raw| {
        let head: MessageHead = serde_json::from_str(raw.get()).ok()?;
        (head.role.as_deref() == Some("user")).then_some(head.content)
    })??;
    let content = content.get();
    let text = if content.starts_with('"') {
        string_prefix(content, max_bytes)?
    } else {
        let parts: Vec<&RawValue> = serde_json::from_str(content).ok()?;
        let mut joined = String::new();
        let mut any = false;
        for part in parts {
            if joined.len() >= max_bytes {
                break;
            }
            let Ok(head) = serde_json::from_str::<PartHead>(part.get()) else { continue };
            let Some(text) = head.text.filter(|_| head.kind.as_deref() == Some("text")) else { continue };
            if any {
                joined.push('\n');
            }
            any = true;
            let room = max_bytes.saturating_sub(joined.len());
            joined.push_str(&string_prefix(text.get(), room)?);
        }
        if !any {
            return None;
        }
        joined
    };
    Some(prefix(&text, max_bytes).to_string())
}

/// Unescapes a JSON string literal (quotes included, already checked by serde) only until
/// `max_bytes` of text are out. Lone surrogates become U+FFFD, as in a lossy decode.
fn string_prefix(literal: &str, max_bytes: usize) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len().min(max_bytes.saturating_add(4)));
    let mut chars = inner.chars();
    while out.len() < max_bytes {
        let Some(c) = chars.next() else { break };
        if c != '\\' {
            out.push(c);
            continue;
        }
        let unescaped = match chars.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => unicode_escape(&mut chars)?,
            other => other,
        };
        out.push(unescaped);
    }
    Some(out)
}

/// The character of a `\uXXXX` escape whose `\u` was read, with its low surrogate if it has one.
fn unicode_escape(chars: &mut Chars) -> Option<char> {
    let high = hex4(chars)?;
    if !(0xD800..0xDC00).contains(&high) {
        return Some(char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
    let mut ahead = chars.clone();
    if ahead.next() == Some('\\') && ahead.next() == Some('u') {
        if let Some(low) = hex4(&mut ahead).filter(|low| (0xDC00..0xE000).contains(low)) {
            *chars = ahead;
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            return Some(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
    }
    Some(char::REPLACEMENT_CHARACTER)
}

fn hex4(chars: &mut Chars) -> Option<u32> {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILES: &[&str] = &["general", "coder", "reasoner"];

    fn known(name: &str) -> bool {
        PROFILES.contains(&name)
    }

    fn classifier(json: &str) -> Result<Classifier, (String, String)> {
        Classifier::check(raw(json).expect(json), &known)
    }

    fn raw(json: &str) -> Result<RawClassifier, ConfigError> {
        RawClassifier::read(Field::root(&crate::config::json::parse(json.as_bytes())?))
    }

    const EXAMPLE: &str = r#"{
        "maxBytes": 4096,
        "default": "general",
        "rules": [
          { "profile": "coder", "keywords": ["코드", "함수", "버그", "code", "function", "bug", "compile", "rust"] },
          { "profile": "reasoner", "regex": "(?i)\\b(prove|why|step by step)\\b|증명|왜|단계별" },
          { "profile": "coder", "keywords": ["```"] }
        ]
    }"#;

    #[test]
    fn korean_and_english_prompts_get_their_profile() {
        let c = classifier(EXAMPLE).unwrap();
        let cases: &[(&str, &str)] = &[
            ("이 함수에서 버그를 찾아줘", "coder"),
            ("파이썬 코드 리뷰 부탁해요", "coder"),
            ("Write a function that reverses a list", "coder"),
            ("My build fails: cannot COMPILE this", "coder"),
            ("Rust의 소유권을 설명해줘", "coder"),
            ("Prove that the square root of 2 is irrational", "reasoner"),
            ("Explain step by step how tides work", "reasoner"),
            ("WHY is the sky blue?", "reasoner"),
            ("피타고라스 정리를 증명해 줘", "reasoner"),
            ("하늘은 왜 파란가요?", "reasoner"),
            ("단계별로 풀어줘: 3x + 5 = 20", "reasoner"),
            ("Here it is:\n```\nx = 1\n```", "coder"),
            ("오늘 저녁 메뉴 추천해줘", "general"),
            ("Write a haiku about autumn", "general"),
            ("Whyever not? Improve this paragraph", "general"),
            ("", "general"),
        ];
        for (prompt, profile) in cases {
            assert_eq!(c.classify(prompt), *profile, "{prompt}");
        }
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let c = classifier(EXAMPLE).unwrap();
        // Both the coder keywords and the reasoner regex match: coder comes first.
        assert_eq!(c.classify("Why does my Rust code not compile?"), "coder");
        assert_eq!(c.classify("왜 이 함수가 느린가요?"), "coder");
        let reversed = classifier(
            r#"{"default":"general","rules":[
                {"profile":"reasoner","regex":"(?i)\\bwhy\\b"},
                {"profile":"coder","keywords":["rust"]}]}"#,
        )
        .unwrap();
        assert_eq!(reversed.classify("Why does my Rust code not compile?"), "reasoner");
    }

    #[test]
    fn a_rule_with_keywords_and_regex_matches_on_either() {
        let c = classifier(r#"{"default":"general","rules":[{"profile":"coder","keywords":["sql"],"regex":"\\bfn \\w+\\("}]}"#).unwrap();
        let cases: &[(&str, &str)] = &[
            ("optimize this SQL query", "coder"),
            ("what does fn main() do", "coder"),
            ("what does function main do", "general"),
        ];
        for (prompt, profile) in cases {
            assert_eq!(c.classify(prompt), *profile, "{prompt}");
        }
    }

    #[test]
    fn keywords_match_case_insensitively_in_any_script() {
        let c = classifier(r#"{"default":"general","rules":[{"profile":"coder","keywords":["Über", "ΣΦΑΛΜΑ", "ПРОГРАММА"]}]}"#).unwrap();
        let cases: &[(&str, &str)] = &[
            ("ÜBER ALLES", "coder"),
            ("das ist über", "coder"),
            ("βρήκα ένα σφαλμα", "coder"),
            ("Это программа на Python", "coder"),
            ("uber", "general"),
        ];
        for (prompt, profile) in cases {
            assert_eq!(c.classify(prompt), *profile, "{prompt}");
        }
    }

    #[test]
    fn regex_case_folding_is_ascii_only_so_keywords_cover_the_rest() {
        let c = classifier(
            r#"{"default":"general","rules":[{"profile":"coder","regex":"(?i)\\bdebug\\b|über"},{"profile":"reasoner","keywords":["ÉCOLE"]}]}"#,
        )
        .unwrap();
        let cases: &[(&str, &str)] = &[
            ("DEBUG this", "coder"),
            ("über", "coder"),
            ("ÜBER", "general"),
            ("l'école", "reasoner"),
        ];
        for (prompt, profile) in cases {
            assert_eq!(c.classify(prompt), *profile, "{prompt}");
        }
        let (field, reason) = classifier(r#"{"default":"general","rules":[{"profile":"coder","regex":"\\p{Hangul}"}]}"#).unwrap_err();
        assert_eq!(field, "classifier.rules[0].regex");
        assert!(reason.contains("not supported"), "{reason}");
    }

    #[test]
    fn only_the_first_max_bytes_are_read() {
        let c = classifier(r#"{"maxBytes":64,"default":"general","rules":[{"profile":"coder","keywords":["bug"]}]}"#).unwrap();
        let filler = "a".repeat(100);
        assert_eq!(c.classify(&format!("bug {filler}")), "coder");
        assert_eq!(c.classify(&format!("{filler} bug")), "general");
        // Just inside and just across the limit.
        assert_eq!(c.classify(&format!("{}bug", "a".repeat(61))), "coder");
        assert_eq!(c.classify(&format!("{}bug", "a".repeat(62))), "general");
    }

    #[test]
    fn the_cut_never_splits_a_korean_character() {
        // `버그` is two 3-byte characters.
        let cases: &[(u64, &str)] = &[(6, "coder"), (7, "coder"), (5, "general"), (4, "general"), (1, "general")];
        for (max_bytes, profile) in cases {
            let c = classifier(&format!(r#"{{"maxBytes":{max_bytes},"default":"general","rules":[{{"profile":"coder","keywords":["버그"]}}]}}"#)).unwrap();
            assert_eq!(c.classify("버그"), *profile, "maxBytes {max_bytes}");
        }
        assert_eq!(prefix("버그", 5), "버");
        assert_eq!(prefix("버그", 2), "");
        assert_eq!(prefix("버그", 6), "버그");
    }

    #[test]
    fn a_huge_message_in_a_body_is_read_only_to_max_bytes() {
        let c = classifier(r#"{"maxBytes":4096,"default":"general","rules":[{"profile":"coder","keywords":["bug"]}]}"#).unwrap();
        let filler = "x\\n".repeat(5 * 1024 * 1024 / 3);
        let late = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{filler} bug"}}]}}"#);
        let early = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"bug {filler}"}}]}}"#);
        assert!(late.len() > 5_000_000);
        assert_eq!(c.classify_body(late.as_bytes()), "general");
        assert_eq!(c.classify_body(early.as_bytes()), "coder");
        let text = last_user_text(late.as_bytes(), 4096).unwrap();
        assert_eq!(text.len(), 4096);
        assert!(text.starts_with("x\nx\n"));
    }

    #[test]
    fn the_last_user_message_text_is_found_in_the_body() {
        let cases: &[(&str, Option<&str>)] = &[
            (r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#, Some("hello")),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":"second"},{"role":"tool","tool_call_id":"c","content":"42"}]}"#,
                Some("second"),
            ),
            (
                r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"what is"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA="}},{"type":"text","text":"this?"}]}],"model":"m"}"#,
                Some("what is\nthis?"),
            ),
            (r#"{"messages":[{"content":"escaped \"q\" \\ \/ \t\u00e9\ud83d\ude00\u9a6c","role":"user"}]}"#, Some("escaped \"q\" \\ / \té😀马")),
            (r#"{"messages":[{"role":"us\u0065r","content":"role escaped"}]}"#, Some("role escaped")),
            (r#"{"messages":[{"role":"user","content":"lone \ud800 surrogate"}]}"#, Some("lone \u{fffd} surrogate")),
            (r#"{"messages":[{"role":"user","content":"n\ud83dx"}]}"#, Some("n\u{fffd}x")),
            (r#"{"messages":[{"role":"user","content":null}]}"#, None),
            (r#"{"messages":[{"role":"user"}]}"#, None),
            (r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x"}}]}]}"#, None),
            (r#"{"messages":[{"role":"assistant","content":"only the model spoke"}]}"#, None),
            (r#"{"messages":[]}"#, None),
            (r#"{"model":"m"}"#, None),
            (r#"{"messages":"hi"}"#, None),
            (r#"{"messages":[{"role":"user","content":"unterminated"#, None),
            ("not json", None),
        ];
        for (body, expected) in cases {
            assert_eq!(last_user_text(body.as_bytes(), 4096).as_deref(), *expected, "{body}");
        }
    }

    #[test]
    fn bounded_unescaping_agrees_with_serde() {
        let texts = ["plain", "tab\there", "quote \" backslash \\ slash /", "control \u{1} \u{1f}", "한국어 😀 é", "\u{8}\u{c}\r\n"];
        for text in texts {
            let literal = serde_json::to_string(text).unwrap();
            assert_eq!(string_prefix(&literal, usize::MAX).as_deref(), Some(text), "{literal}");
        }
        // Escapes written the long way decode the same.
        assert_eq!(string_prefix(r#""\u0041\u00E9\uD83D\uDE00""#, 100).as_deref(), Some("Aé😀"));
        // Stops at the budget, not at the end of the string.
        assert_eq!(string_prefix(r#""abcdef""#, 3).as_deref(), Some("abc"));
        assert_eq!(string_prefix(r#""a\nbcdef""#, 2).as_deref(), Some("a\n"));
    }

    #[test]
    fn text_parts_share_the_byte_budget() {
        let body = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"abcdef"},{"type":"text","text":"ghijkl"}]}]}"#;
        let cases: &[(usize, &str)] = &[(3, "abc"), (6, "abcdef"), (8, "abcdef\ng"), (100, "abcdef\nghijkl")];
        for (max_bytes, expected) in cases {
            assert_eq!(last_user_text(body.as_bytes(), *max_bytes).as_deref(), Some(*expected), "max {max_bytes}");
        }
    }

    #[test]
    fn bad_classifier_configs_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"default":"poet"}"#, "classifier.default", "profile `poet` is not in `profiles`"),
            (
                r#"{"default":"general","rules":[{"profile":"coder","keywords":["x"]},{"profile":"poet","keywords":["rhyme"]}]}"#,
                "classifier.rules[1].profile",
                "profile `poet` is not in `profiles`",
            ),
            (r#"{"default":"general","rules":[{"profile":"coder","regex":"(unclosed"}]}"#, "classifier.rules[0].regex", "without closing ')'"),
            (r#"{"default":"general","rules":[{"profile":"coder","regex":"[z-a]"}]}"#, "classifier.rules[0].regex", "does not compile"),
            (r#"{"default":"general","rules":[{"profile":"coder","regex":"(?:\\w{100}){100}"}]}"#, "classifier.rules[0].regex", "size limit"),
            (r#"{"default":"general","rules":[{"profile":"coder","regex":""}]}"#, "classifier.rules[0].regex", "must not be empty"),
            (r#"{"default":"general","rules":[{"profile":"coder","keywords":["ok"," "]}]}"#, "classifier.rules[0].keywords[1]", "must not be blank"),
            (r#"{"default":"general","rules":[{"profile":"coder"}]}"#, "classifier.rules[0]", "needs `keywords`, `regex` or both"),
            (r#"{"default":"general","maxBytes":0}"#, "classifier.maxBytes", "between 1 and"),
            (r#"{"default":"general","maxBytes":1048577}"#, "classifier.maxBytes", "between 1 and"),
        ];
        for (json, field, reason) in cases {
            let (got_field, got_reason) = classifier(json).expect_err(json);
            assert_eq!(got_field, *field, "{json}: {got_reason}");
            assert!(got_reason.contains(reason), "{json}: {got_reason}");
        }
    }

    #[test]
    fn raw_classifier_refuses_unknown_fields_and_defaults_max_bytes() {
        let err = raw(r#"{"default":"general","rule":[]}"#).unwrap_err();
        assert_eq!(err.field, "rule");
        assert!(err.to_string().contains("unknown field `rule`"), "{err}");
        let err = raw(r#"{"default":"general","rules":[{"profile":"coder","keyword":"x"}]}"#).unwrap_err();
        assert_eq!(err.field, "rules[0].keyword");
        assert!(err.to_string().contains("unknown field `keyword`"), "{err}");
        assert!(raw(r#"{"rules":[]}"#).unwrap_err().to_string().contains("missing field `default`"));
        assert_eq!(classifier(r#"{"default":"general"}"#).unwrap().max_bytes(), 4096);
    }
}
