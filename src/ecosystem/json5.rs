//! The JSON that pm2 accepts and JSON does not.
//!
//! pm2 reads an ecosystem `.json` file as a JavaScript expression
//! (`lib/Common.js`, `parseConfig`: the text in parentheses, run by `vm`),
//! so pm2 users' `.json` files may carry what JSON5 adds and JavaScript
//! allows: `//` and `/* */` comments, trailing commas, 'single-quoted'
//! strings and unquoted keys. A `.json` file that is strict JSON is read
//! as such; one that is not is rewritten here into strict JSON and read
//! again, and a `.json5` file always is. Newlines are kept, so an error's
//! line number is the file's. Not taken: hexadecimal and `+`/`.5` numbers,
//! `Infinity`, `NaN`, multi-line strings (they stay errors).

/// `text` with comments removed, trailing commas dropped, single-quoted
/// strings and bare keys double-quoted; an error for an unterminated
/// string or comment, with its line.
pub fn to_json(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    while let Some((at, c)) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push('"');
                let mut closed = false;
                while let Some((_, s)) = chars.next() {
                    match s {
                        '\\' => match chars.next() {
                            // \' is JavaScript's, not JSON's.
                            Some((_, '\'')) => out.push('\''),
                            Some((_, e)) => {
                                out.push('\\');
                                out.push(e);
                            }
                            None => break,
                        },
                        '"' if c == '\'' => out.push_str("\\\""),
                        '\n' => break,
                        s if s == c => {
                            closed = true;
                            break;
                        }
                        s => out.push(s),
                    }
                }
                if !closed {
                    return Err(format!("line {}: a string that does not end", line_of(at)));
                }
                out.push('"');
            }
            '/' if chars.peek().is_some_and(|&(_, n)| n == '/') => {
                while chars.next_if(|&(_, n)| n != '\n').is_some() {}
            }
            '/' if chars.peek().is_some_and(|&(_, n)| n == '*') => {
                chars.next();
                let mut closed = false;
                while let Some((_, n)) = chars.next() {
                    if n == '\n' {
                        out.push('\n');
                    } else if n == '*' && chars.next_if(|&(_, n)| n == '/').is_some() {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("line {}: a comment that does not end", line_of(at)));
                }
                out.push(' ');
            }
            '}' | ']' => {
                let kept = out.trim_end().len();
                if out[..kept].ends_with(',') {
                    out.remove(kept - 1);
                }
                out.push(c);
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some((_, n)) =
                    chars.next_if(|&(_, n)| n.is_ascii_alphanumeric() || n == '_' || n == '$')
                {
                    word.push(n);
                }
                let rest = &text[at + word.len()..];
                if rest.trim_start().starts_with(':') {
                    out.push('"');
                    out.push_str(&word);
                    out.push('"');
                } else {
                    out.push_str(&word);
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn read(text: &str) -> Value {
        let strict = to_json(text).expect("rewritten");
        serde_json::from_str(&strict).unwrap_or_else(|e| panic!("{e}: {strict}"))
    }

    #[test]
    fn what_pm2_reads_in_a_json_file_is_read() {
        let text = r#"
// pm2 ecosystem, written by hand
{
  apps: [
    {
      name: 'api',            // the service
      script: "server.js",
      /* two, as in production */
      instances: 2,
      env: { GREETING: 'it\'s "quoted"', URL: 'http://x//y', $A_1: true, },
    },
  ],
}
"#;
        assert_eq!(
            read(text),
            json!({"apps": [{
                "name": "api", "script": "server.js", "instances": 2,
                "env": {"GREETING": "it's \"quoted\"", "URL": "http://x//y", "$A_1": true}
            }]})
        );
    }

    #[test]
    fn strict_json_is_left_as_it_is() {
        let text = r#"{"a": [1, 2.5, -3e2, true, false, null], "b": "x\"y\\z // not /* a comment */", "c": {}}"#;
        assert_eq!(to_json(text).expect("rewritten"), text);
    }

    #[test]
    fn values_that_are_words_stay_words_and_keys_get_quotes() {
        assert_eq!(
            read("{a: true, b: null, c: false}"),
            json!({"a": true, "b": null, "c": false})
        );
        // Not JSON (and not taken): stays an error for serde_json.
        let bad = to_json("{a: Infinity}").expect("rewritten");
        assert!(serde_json::from_str::<Value>(&bad).is_err());
    }

    #[test]
    fn line_numbers_survive_comments() {
        let text = "{\n/* one\ntwo\nthree */\n// four\n\"a\": 1,\n\"b\": oops\n}";
        let strict = to_json(text).expect("rewritten");
        let e = serde_json::from_str::<Value>(&strict).expect_err("oops is no value");
        assert_eq!(e.line(), 7, "{e}");
    }

    #[test]
    fn unterminated_strings_and_comments_name_their_line() {
        assert_eq!(
            to_json("{\n'a: 1}").unwrap_err(),
            "line 2: a string that does not end"
        );
        assert_eq!(
            to_json("{\n\n/* x").unwrap_err(),
            "line 3: a comment that does not end"
        );
        assert_eq!(
            to_json("{\"a\\").unwrap_err(),
            "line 1: a string that does not end"
        );
    }
}
