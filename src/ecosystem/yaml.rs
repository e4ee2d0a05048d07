//! The YAML that pm2 ecosystem files use, read into JSON: block mappings
//! and sequences (a sequence may sit at its key's indent), `- key: value`
//! items, plain, 'single' and "double" quoted scalars, flow `[a, b]` and
//! `{k: v}` (also across lines), `|` and `>` block scalars, comments and
//! `---`. Plain scalars are typed as YAML 1.2's core schema does (null,
//! true/false, numbers). Anchors, aliases, tags and multi-document files
//! are refused with a line number. Hand-written on purpose: a full YAML
//! crate is far more code than this subset, in a binary with a size
//! budget (README "Dependencies").

use serde_json::{Map, Number, Value};

/// Limits: a file is at most `MAX_OUTPUT` bytes (read.rs); nesting at most
/// this deep.
const MAX_DEPTH: usize = 64;

struct Line<'a> {
    no: usize,
    indent: usize,
    /// Without indentation and comment.
    text: String,
    /// Without indentation, comment kept (block scalars).
    raw: &'a str,
}

pub fn parse(src: &str) -> Result<Value, String> {
    let mut lines = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let no = i + 1;
        let body = raw.trim_start_matches(' ');
        if body.starts_with('\t') {
            return Err(format!(
                "line {no}: a tab in the indentation (YAML allows spaces only)"
            ));
        }
        let text = strip_comment(body).trim_end().to_string();
        if text == "---" && lines.iter().all(|l: &Line| l.text.is_empty()) {
            continue;
        }
        if text == "---" || text == "..." {
            return Err(format!("line {no}: one YAML document per file"));
        }
        if text.starts_with('%') {
            return Err(format!("line {no}: YAML directives are not supported"));
        }
        lines.push(Line {
            no,
            indent: raw.len() - body.len(),
            text,
            raw: body,
        });
    }
    let mut p = Parser { lines, i: 0 };
    p.skip_blank();
    if p.i >= p.lines.len() {
        return Ok(Value::Null);
    }
    let indent = p.lines[p.i].indent;
    let v = p.block(indent, 0)?;
    p.skip_blank();
    if let Some(l) = p.lines.get(p.i) {
        return Err(format!("line {}: unexpected indentation", l.no));
    }
    Ok(v)
}

/// The line without a `#` comment (one that starts the line or follows a
/// space, outside quotes).
fn strip_comment(s: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && prev != '\\' => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &s[..i],
            _ => {}
        }
        prev = c;
    }
    s
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    i: usize,
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

impl Parser<'_> {
    fn skip_blank(&mut self) {
        while self.lines.get(self.i).is_some_and(|l| l.text.is_empty()) {
            self.i += 1;
        }
    }

    /// The next non-blank line's indent, if any.
    fn next_indent(&mut self) -> Option<usize> {
        self.skip_blank();
        self.lines.get(self.i).map(|l| l.indent)
    }

    fn block(&mut self, indent: usize, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "line {}: nested over {MAX_DEPTH} levels",
                self.lines[self.i].no
            ));
        }
        if is_item(&self.lines[self.i].text) {
            self.sequence(indent, depth)
        } else {
            self.mapping(indent, depth)
        }
    }

    fn sequence(&mut self, indent: usize, depth: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while self.next_indent() == Some(indent) && is_item(&self.lines[self.i].text) {
            let l = &mut self.lines[self.i];
            let rest = l.text[1..].trim_start().to_string();
            if rest.is_empty() {
                self.i += 1;
                match self.next_indent() {
                    Some(n) if n > indent => items.push(self.block(n, depth + 1)?),
                    _ => items.push(Value::Null),
                }
                continue;
            }
            let nested =
                is_item(&rest) || (!rest.starts_with(['[', '{']) && split_key(&rest).is_some());
            if !nested {
                let no = l.no;
                self.i += 1;
                let flow = self.flow_lines(rest, no)?;
                items.push(scalar(&flow).map_err(|e| format!("line {no}: {e}"))?);
                continue;
            }
            // The item's content is a line of its own, at its own column.
            let column = indent + (l.text.len() - rest.len());
            l.indent = column;
            l.raw = &l.raw[l.raw.len().min(column - indent)..];
            l.text = rest;
            items.push(self.block(column, depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize, depth: usize) -> Result<Value, String> {
        let mut map = Map::new();
        while self.next_indent() == Some(indent) && !is_item(&self.lines[self.i].text) {
            let no = self.lines[self.i].no;
            let text = self.lines[self.i].text.clone();
            let (key, rest) = split_key(&text)
                .ok_or_else(|| format!("line {no}: expected `key: value`, found {text:?}"))?;
            self.i += 1;
            let value = if rest.is_empty() {
                match self.next_indent() {
                    Some(n) if n > indent => self.block(n, depth + 1)?,
                    // A sequence may sit at its key's own indent.
                    Some(n) if n == indent && is_item(&self.lines[self.i].text) => {
                        self.sequence(n, depth + 1)?
                    }
                    _ => Value::Null,
                }
            } else if rest.starts_with('|') || rest.starts_with('>') {
                Value::String(self.block_scalar(indent, rest.starts_with('|')))
            } else {
                let flow = self.flow_lines(rest.to_string(), no)?;
                scalar(&flow).map_err(|e| format!("line {no}: {e}"))?
            };
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("line {no}: key {key:?} twice"));
            }
        }
        Ok(Value::Object(map))
    }

    /// A flow collection that starts on line `no` with `flow`, with the
    /// following lines up to its end.
    fn flow_lines(&mut self, mut flow: String, no: usize) -> Result<String, String> {
        while (flow.starts_with('[') || flow.starts_with('{')) && !balanced(&flow) {
            let Some(l) = self.lines.get(self.i) else {
                return Err(format!("line {no}: unclosed {}", &flow[..1]));
            };
            flow.push(' ');
            flow.push_str(&l.text);
            self.i += 1;
        }
        Ok(flow)
    }

    /// `|` keeps the lines' breaks, `>` folds them into spaces.
    fn block_scalar(&mut self, indent: usize, literal: bool) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut inner = None;
        while let Some(l) = self.lines.get(self.i) {
            if !l.text.is_empty() && l.indent <= indent {
                break;
            }
            let at = *inner.get_or_insert(l.indent);
            let pad = " ".repeat(l.indent.saturating_sub(at));
            parts.push(if l.text.is_empty() {
                String::new()
            } else {
                format!("{pad}{}", l.raw.trim_end())
            });
            self.i += 1;
        }
        while parts.last().is_some_and(String::is_empty) {
            parts.pop();
        }
        let mut s = parts.join(if literal { "\n" } else { " " });
        s.push('\n');
        s
    }
}

/// `key: rest` (rest may be empty), the key unquoted.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(q @ ('"' | '\'')) = text.chars().next() {
        let end = text[1..].find(q)? + 1;
        let rest = text[end + 1..].trim_start().strip_prefix(':')?;
        (text[1..end].to_string(), rest)
    } else {
        let at = text
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|&i| text[i + 1..].is_empty() || text[i + 1..].starts_with(' '))?;
        (text[..at].trim().to_string(), &text[at + 1..])
    };
    if key.is_empty() {
        return None;
    }
    Some((key, rest.trim()))
}

fn balanced(s: &str) -> bool {
    let (mut depth, mut single, mut double) = (0i32, false, false);
    for c in s.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '[' | '{' if !single && !double => depth += 1,
            ']' | '}' if !single && !double => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// A scalar or flow collection that makes up the whole of `s`.
fn scalar(s: &str) -> Result<Value, String> {
    let mut f = Flow {
        s: s.as_bytes(),
        at: 0,
        text: s,
    };
    let v = f.value(false, 0)?;
    f.space();
    if f.at < f.s.len() {
        return Err(format!("unexpected {:?}", &s[f.at..]));
    }
    Ok(v)
}

struct Flow<'a> {
    s: &'a [u8],
    at: usize,
    text: &'a str,
}

impl Flow<'_> {
    fn space(&mut self) {
        while self.s.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn value(&mut self, in_flow: bool, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested over {MAX_DEPTH} levels"));
        }
        self.space();
        match self.s.get(self.at) {
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.space();
                    if self.eat(b']') {
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value(true, depth + 1)?);
                    self.space();
                    if !self.eat(b',') && self.s.get(self.at) != Some(&b']') {
                        return Err("expected , or ] in a [list]".into());
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut map = Map::new();
                loop {
                    self.space();
                    if self.eat(b'}') {
                        return Ok(Value::Object(map));
                    }
                    let key = match self.value(true, depth + 1)? {
                        Value::String(k) => k,
                        v => v.to_string(),
                    };
                    self.space();
                    if !self.eat(b':') {
                        return Err(format!("expected : after {key:?} in a {{map}}"));
                    }
                    let v = self.value(true, depth + 1)?;
                    map.insert(key, v);
                    self.space();
                    if !self.eat(b',') && self.s.get(self.at) != Some(&b'}') {
                        return Err("expected , or } in a {map}".into());
                    }
                }
            }
            Some(b'"') => self.double().map(Value::String),
            Some(b'\'') => self.single().map(Value::String),
            Some(b'&' | b'*' | b'!') => {
                Err("YAML anchors, aliases and tags are not supported".into())
            }
            _ => {
                let start = self.at;
                while let Some(&b) = self.s.get(self.at) {
                    let stop = in_flow
                        && (matches!(b, b',' | b']' | b'}')
                            || (b == b':'
                                && self
                                    .s
                                    .get(self.at + 1)
                                    .is_none_or(|n| n.is_ascii_whitespace())));
                    if stop {
                        break;
                    }
                    self.at += 1;
                }
                Ok(plain(self.text[start..self.at].trim()))
            }
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let yes = self.s.get(self.at) == Some(&b);
        if yes {
            self.at += 1;
        }
        yes
    }

    fn single(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        let rest = &self.text[self.at..];
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                    chars.next();
                    out.push('\'');
                    continue;
                }
                self.at += i + 1;
                return Ok(out);
            }
            out.push(c);
        }
        Err("unclosed 'quote'".into())
    }

    fn double(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = String::new();
        let rest = &self.text[self.at..];
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('0') => out.push('\0'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, h)| h))
                            .collect();
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or(format!("bad escape \\u{hex}"))?;
                        out.push(c);
                    }
                    Some(e @ ('"' | '\\' | '/' | ' ')) => out.push(e),
                    Some(e) => return Err(format!("unknown escape \\{e}")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("unclosed \"quote\"".into())
    }
}

/// A plain scalar, typed as YAML 1.2's core schema types it.
fn plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.parse::<i64>() {
            return Value::Number(n.into());
        }
    }
    let numeric = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if numeric {
        if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ecosystem_file_as_pm2_users_write_it() {
        let src = r#"
# pm2 ecosystem
---
apps:
  - name: api   # the API
    script: ./server.js
    instances: max
    exec_mode: cluster
    kill_timeout: 5000
    wait_ready: true
    args: ["--port", 3000, 'it''s']
    env:
      NODE_ENV: production
      RATIO: 1.5
      EMPTY:
      URL: "http://x/#not-a-comment"
    env_staging: {NODE_ENV: staging, DEBUG: "a,b"}
  - name: worker
    script: worker.js
    node_args:
    - --max-old-space-size=512
    cron: |
      line one
      line two
"#;
        assert_eq!(
            parse(src).expect("valid"),
            json!({"apps": [
                {"name": "api", "script": "./server.js", "instances": "max",
                 "exec_mode": "cluster", "kill_timeout": 5000, "wait_ready": true,
                 "args": ["--port", 3000, "it's"],
                 "env": {"NODE_ENV": "production", "RATIO": 1.5, "EMPTY": null,
                         "URL": "http://x/#not-a-comment"},
                 "env_staging": {"NODE_ENV": "staging", "DEBUG": "a,b"}},
                {"name": "worker", "script": "worker.js",
                 "node_args": ["--max-old-space-size=512"],
                 "cron": "line one\nline two\n"}
            ]})
        );
    }

    #[test]
    fn sequences_at_the_keys_indent_and_flow_across_lines() {
        let src = "apps:\n- script: a.js\n  args: [\n    one,\n    two\n  ]\n- script: b.js\n";
        assert_eq!(
            parse(src).expect("valid"),
            json!({"apps": [{"script": "a.js", "args": ["one", "two"]}, {"script": "b.js"}]})
        );
        assert_eq!(parse("").expect("empty"), Value::Null);
        assert_eq!(
            parse("- 1\n- -2\n- 0.5\n- ~\n- \"\\u00e9\\n\"\n- 12abc\n").expect("list"),
            json!([1, -2, 0.5, null, "é\n", "12abc"])
        );
    }

    #[test]
    fn what_it_refuses_names_the_line() {
        for (src, want) in [
            ("a: &x 1\n", "line 1: YAML anchors"),
            ("a: 1\nb: *x\n", "line 2: YAML anchors"),
            ("a: !!str 1\n", "line 1: YAML anchors"),
            ("a: 1\n---\nb: 2\n", "line 2: one YAML document"),
            ("a:\n\tb: 1\n", "line 2: a tab"),
            ("a: 1\na: 2\n", "line 2: key \"a\" twice"),
            ("a: 1\n  b: 2\n", "line 2: unexpected indentation"),
            ("just text\n", "line 1: expected `key: value`"),
            ("a: [1, 2\n", "line 1: unclosed ["),
            ("a: \"open\n", "line 1: unclosed \"quote\""),
        ] {
            let e = parse(src).expect_err(src);
            assert!(e.starts_with(want), "{src:?}: {e}");
        }
    }
}
