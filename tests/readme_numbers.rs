//! The README's benchmark figures against `bench/results.json` (issue 20).
//!
//! `bench/run.py` writes every figure of the README's Benchmarks section
//! (and the binary size under "Try it") between `<!-- bench:NAME:start -->`
//! and `<!-- bench:NAME:end -->`, from `results.json`, by a rule it stores
//! there too: `"render": {NAME: [line, ...]}`, each line either literal text
//! or `{"t": template, "v": [value, ...]}` whose `{}` are replaced in order.
//! A value is `{"s": path}` (a string, verbatim) or
//! `{"sum": [path, ...], "div": [path, ...], "mul": k, "d": decimals}`:
//! the numbers at `sum` added up (from 0.0, in order), divided by those at
//! `div` added up, times `mul`, shown as Python's `format(x, ",.{d}f")`
//! (thousands separators, round half to even on the exact binary value, as
//! Rust's `{:.d$}`), without a minus sign on a zero. A path is a list of
//! object keys.
//!
//! This test applies the same rule: a figure edited by hand in the README,
//! or a measurement edited in `results.json`, fails it. Outside the blocks
//! (and code fences) the Benchmarks section may hold no figure at all (a
//! digit that does not end a name such as `pm2`).

use std::fs;
use std::path::Path;

use serde_json::Value;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn results() -> Value {
    serde_json::from_str(&read("bench/results.json")).expect("bench/results.json is JSON")
}

fn lookup<'a>(results: &'a Value, path: &Value) -> Result<&'a Value, String> {
    let keys = path
        .as_array()
        .ok_or(format!("path {path} is not a list"))?;
    keys.iter().try_fold(results, |v, key| {
        let key = key.as_str().ok_or(format!("key {key} is not a string"))?;
        v.get(key).ok_or(format!("results.json has no {path}"))
    })
}

fn sum(results: &Value, paths: &Value) -> Result<f64, String> {
    let paths = paths.as_array().ok_or(format!("{paths} is not a list"))?;
    let mut x = 0.0;
    for path in paths {
        let v = lookup(results, path)?;
        x += v.as_f64().ok_or(format!("{path}: {v} is not a number"))?;
    }
    Ok(x)
}

/// Python's `format(x, f",.{d}f")`, without a minus sign on a zero.
fn format_number(x: f64, d: usize) -> String {
    let s = format!("{x:.d$}");
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s.as_str()),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 && c.is_ascii_digit() {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if let Some(f) = frac {
        grouped.push('.');
        grouped.push_str(f);
    }
    let zero = !grouped.chars().any(|c| ('1'..='9').contains(&c));
    if zero || sign.is_empty() {
        grouped
    } else {
        format!("-{grouped}")
    }
}

fn value(results: &Value, spec: &Value) -> Result<String, String> {
    if let Some(path) = spec.get("s") {
        let v = lookup(results, path)?;
        return Ok(v.as_str().map_or_else(|| v.to_string(), str::to_string));
    }
    let mut x = sum(
        results,
        spec.get("sum").ok_or(format!("value {spec}: no sum"))?,
    )?;
    if let Some(div) = spec.get("div") {
        x /= sum(results, div)?;
    }
    if let Some(mul) = spec.get("mul") {
        x *= mul
            .as_f64()
            .ok_or(format!("value {spec}: mul is not a number"))?;
    }
    let d = spec
        .get("d")
        .and_then(Value::as_u64)
        .ok_or(format!("value {spec}: no d"))?;
    Ok(format_number(x, d as usize))
}

fn render_line(results: &Value, line: &Value) -> Result<String, String> {
    if let Some(text) = line.as_str() {
        return Ok(text.to_string());
    }
    let template = line
        .get("t")
        .and_then(Value::as_str)
        .ok_or(format!("line {line}: no template"))?;
    let values = line
        .get("v")
        .and_then(Value::as_array)
        .ok_or(format!("line {line}: no values"))?;
    let pieces: Vec<&str> = template.split("{}").collect();
    if pieces.len() != values.len() + 1 {
        return Err(format!(
            "line {line}: {} values for {} places",
            values.len(),
            pieces.len() - 1
        ));
    }
    let mut out = pieces[0].to_string();
    for (v, piece) in values.iter().zip(&pieces[1..]) {
        out += &value(results, v)?;
        out += piece;
    }
    Ok(out)
}

/// The lines between a block's markers, or None when it has none.
fn block<'a>(readme: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == format!("<!-- bench:{name}:start -->"))?;
    let end = lines
        .iter()
        .position(|l| *l == format!("<!-- bench:{name}:end -->"))?;
    (start < end).then(|| lines[start + 1..end].to_vec())
}

/// A digit that does not end a name (as in `pm2`).
fn has_figure(line: &str) -> bool {
    let mut prev = ' ';
    line.chars().any(|c| {
        let figure = c.is_ascii_digit() && !prev.is_alphanumeric();
        prev = c;
        figure
    })
}

/// Every block in the README rendered from results.json, every rendered
/// block in the README, and no digit in the Benchmarks section outside
/// them.
fn check(readme: &str, results: &Value) -> Result<(), String> {
    let render = results.get("render").and_then(Value::as_object).ok_or(
        "bench/results.json has no \"render\" object (python3 bench/run.py --render-only)",
    )?;
    for (name, lines) in render {
        let lines = lines
            .as_array()
            .ok_or(format!("render.{name} is not a list"))?;
        let got = block(readme, name).ok_or(format!(
            "README.md has no <!-- bench:{name}:start/end --> markers"
        ))?;
        let want = lines
            .iter()
            .map(|l| render_line(results, l))
            .collect::<Result<Vec<_>, _>>()?;
        if got != want {
            let i = (0..got.len().max(want.len()))
                .find(|&i| got.get(i).copied() != want.get(i).map(String::as_str))
                .unwrap_or(0);
            return Err(format!(
                "README.md's bench:{name} block differs from bench/results.json at its line {}:\n  README:       {}\n  results.json: {}\nFigures are not edited by hand: rerun python3 bench/run.py (or --render-only).",
                i + 1,
                got.get(i).copied().unwrap_or("(no line)"),
                want.get(i).map_or("(no line)", String::as_str),
            ));
        }
    }
    for line in readme.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- bench:")
            .and_then(|l| l.strip_suffix(":start -->"))
        {
            if !render.contains_key(name) {
                return Err(format!(
                    "README.md's bench:{name} block is not in bench/results.json"
                ));
            }
        }
    }
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Benchmarks\n"))
        .ok_or("README.md has no ## Benchmarks section")?;
    let (mut fence, mut inside) = (false, false);
    for line in section.lines().skip(1) {
        if line.starts_with("```") {
            fence = !fence;
        } else if line.starts_with("<!-- bench:") && line.ends_with(":start -->") {
            inside = true;
        } else if line.starts_with("<!-- bench:") && line.ends_with(":end -->") {
            inside = false;
        } else if !fence && !inside && has_figure(line) {
            return Err(format!(
                "README.md's Benchmarks section has a figure outside the bench: blocks: {line:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_readme_figures_are_those_of_results_json() {
    if let Err(why) = check(&read("README.md"), &results()) {
        panic!("{why}");
    }
}

#[test]
fn results_md_is_from_the_same_run() {
    let results = results();
    let md = read("bench/RESULTS.md");
    for key in ["date", "commit"] {
        let v = results[key].as_str().expect(key);
        assert!(
            md.contains(&format!("| {key} | {v} |")),
            "bench/RESULTS.md is not from the run in bench/results.json ({key} {v}): rerun python3 bench/run.py --render-only"
        );
    }
}

#[test]
fn a_figure_edited_by_hand_fails() {
    let readme = read("README.md");
    let results = results();
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "<!-- bench:headline:start -->")
        .expect("headline block");
    // The first digit of the first table row with one, one higher.
    let (i, line) = lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, l)| {
            l.starts_with("| ") && l.contains(" | ") && l.chars().any(|c| c.is_ascii_digit())
        })
        .expect("a row with a figure");
    let pos = line.find(|c: char| c.is_ascii_digit()).unwrap();
    let d = line.as_bytes()[pos] - b'0';
    let edited_line = format!("{}{}{}", &line[..pos], (d + 1) % 10, &line[pos + 1..]);
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[i] = edited_line;
    assert!(check(&edited.join("\n"), &results).is_err());

    // A figure added outside the blocks.
    let added = readme.replacen("\nWhy: ", "\nWhy (3x): ", 1);
    assert_ne!(added, readme, "the Benchmarks section's \"Why:\" paragraph");
    assert!(check(&added, &results).is_err());
}

#[test]
fn numbers_are_formatted_as_pythons_format() {
    assert_eq!(format_number(999.0, 0), "999");
    assert_eq!(format_number(13103.67, 0), "13,104");
    assert_eq!(format_number(1234567.891, 2), "1,234,567.89");
    assert_eq!(format_number(-1234.0, 0), "-1,234");
    assert_eq!(format_number(-0.001, 2), "0.00");
    assert_eq!(format_number(0.125, 2), "0.12");
    assert_eq!(format_number(2.5, 0), "2");
    assert_eq!(format_number(2.675, 2), "2.67");
    assert_eq!(format_number(100.0, 1), "100.0");
}
