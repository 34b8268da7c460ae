//! A small fuzz driver for crates without `proptest`: a seeded generator, the checked-in
//! corpus replayed first, a case count and a time budget, failing inputs shrunk and saved
//! into the corpus, and a JSON mutator for Lambda events.
//!
//! Shared by the fuzz tests of the crates that do not have `proptest` among their
//! dev-dependencies (`#[path]` module); each uses part of it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The corpus of a target: every `*.json` file, in name order.
pub fn corpus(target: &str) -> Vec<(String, Value)> {
    let dir = repo_root().join("fuzz/corpus").join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).expect("corpus file");
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("corpus {target}/{name} is not JSON: {e}"));
            out.push((name, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Smaller variants of a value: each member or element removed, strings and arrays halved,
/// numbers and strings simplified.
fn smaller(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for k in m.keys() {
                let mut c = m.clone();
                c.remove(k);
                out.push(Value::Object(c));
            }
            for (k, child) in m {
                for s in smaller(child) {
                    let mut c = m.clone();
                    c.insert(k.clone(), s);
                    out.push(Value::Object(c));
                }
            }
        }
        Value::Array(a) => {
            if a.len() > 1 {
                out.push(Value::Array(a[..a.len() / 2].to_vec()));
                out.push(Value::Array(a[a.len() / 2..].to_vec()));
            }
            for i in 0..a.len() {
                let mut c = a.clone();
                c.remove(i);
                out.push(Value::Array(c));
            }
            for (i, child) in a.iter().enumerate() {
                for s in smaller(child) {
                    let mut c = a.clone();
                    c[i] = s;
                    out.push(Value::Array(c));
                }
            }
        }
        Value::String(s) if !s.is_empty() => {
            let chars: Vec<char> = s.chars().collect();
            out.push(Value::String(chars[..chars.len() / 2].iter().collect()));
            out.push(Value::String(chars[chars.len() / 2..].iter().collect()));
            if chars.len() <= 64 {
                for i in 0..chars.len() {
                    let mut c = chars.clone();
                    c.remove(i);
                    out.push(Value::String(c.into_iter().collect()));
                }
            }
        }
        Value::Number(n) if n.as_i64() != Some(0) => out.push(Value::from(0)),
        _ => {}
    }
    out
}

/// A smaller input that still fails, greedily, within a bounded number of tries.
fn shrink(
    mut input: Value,
    mut err: String,
    check: &mut dyn FnMut(&Value) -> Result<(), String>,
) -> (Value, String) {
    let mut tries = 0;
    'outer: while tries < 400 {
        for c in smaller(&input) {
            tries += 1;
            if tries >= 400 {
                break 'outer;
            }
            if let Err(e) = check(&c) {
                input = c;
                err = e;
                continue 'outer;
            }
        }
        break;
    }
    (input, err)
}

/// Replays the corpus of `target`, then runs `check` on generated inputs for
/// `PROPTEST_CASES` cases (default `default_cases`) or `FUZZ_SECONDS`; a failure is shrunk,
/// saved as `fuzz/corpus/<target>/crash-<property>-<seed>.json` and reported.
pub fn run(
    target: &str,
    property: &str,
    default_cases: u64,
    mut generate: impl FnMut(&mut Rng) -> Value,
    mut check: impl FnMut(&Value) -> Result<(), String>,
) {
    for (name, input) in corpus(target) {
        if std::env::var_os("FUZZ_REPORT").is_some() {
            println!("corpus {target}/{name}:");
        }
        if let Err(e) = check(&input) {
            panic!("{target}/{property}: corpus file {name} fails: {e}");
        }
    }
    let total = env_num::<u64>("PROPTEST_CASES").unwrap_or(default_cases);
    let budget = env_num::<f64>("FUZZ_SECONDS");
    let seed = env_num::<u64>("FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        if budget.is_some_and(|b| start.elapsed().as_secs_f64() > b) {
            break;
        }
        let case_seed = seed.wrapping_add(done.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let input = generate(&mut Rng::new(case_seed));
        done += 1;
        if let Err(e) = check(&input) {
            let (small, e) = shrink(input, e, &mut check);
            let dir = repo_root().join("fuzz/corpus").join(target);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{property}-{case_seed:016x}.json"));
            let text = serde_json::to_string_pretty(&small).unwrap_or_default();
            let _ = std::fs::write(&path, &text);
            panic!(
                "{target}/{property}: FUZZ_SEED={seed} case {done} fails: {e}\n\
                 minimal input (saved as {}):\n{text}",
                path.display()
            );
        }
    }
    println!(
        "fuzz-execs target={target} property={property} cases={done} execs={done} seconds={:.2}",
        start.elapsed().as_secs_f64()
    );
}

/// The message of a panic caught by a task's `JoinError`.
pub fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// A hostile scalar or small structure.
pub fn hostile(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => json!(*rng.pick(&[0i64, -1, 1, i64::MIN, i64::MAX, 4_294_967_296])),
        3 => json!(u64::MAX),
        4 => json!(*rng.pick(&[0.5f64, -1.5, 1e300, 1e-300])),
        5 => json!([]),
        6 => json!({}),
        7 => json!([Value::Null, "x"]),
        8 => json!({"S": "x"}),
        _ => json!(*rng.pick(&[
            "",
            " ",
            "\0",
            "%",
            "%FF",
            "%C3",
            "%00",
            "+",
            "..",
            "../..",
            "/",
            "//",
            "🙂",
            "\u{202e}",
            "x\ny",
            "99999999999999999999999999",
            "-1",
            "1e3",
            "NaN",
            "ObjectCreated:Put",
            "ObjectRemoved:Delete",
            "INSERT",
            "REMOVE",
        ])),
    }
}

/// Every node of a value, by path.
fn paths(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(json!(k));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(json!(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match p {
            Value::String(k) => cur.get_mut(k.as_str())?,
            Value::Number(i) => cur.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Damages a random node of `v`: removes it, changes its type, edits its text or number,
/// duplicates or empties an array.
pub fn mutate(rng: &mut Rng, v: &mut Value) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = rng.pick(&all).clone();
    if path.is_empty() {
        return;
    }
    let (last, parent_path) = path.split_last().expect("non-empty");
    let op = rng.below(8);
    if op == 0 {
        if let Some(parent) = at(v, parent_path) {
            match (parent, last) {
                (Value::Object(m), Value::String(k)) => {
                    m.remove(k.as_str());
                }
                (Value::Array(a), Value::Number(i)) => {
                    let i = i.as_u64().unwrap_or(0) as usize;
                    if i < a.len() {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        }
        return;
    }
    let Some(node) = at(v, &path) else {
        return;
    };
    match (op, &*node) {
        (1 | 2, _) => *node = hostile(rng),
        (3, Value::String(s)) => {
            let junk = *rng.pick(&[
                "%FF", "+", " ", "\0", "é", "%2B", "/../", "%", "~", "#", "[1]",
            ]);
            let at = rng.below(s.len() + 1);
            let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
            let mut t = s.clone();
            t.insert_str(at, junk);
            *node = json!(t);
        }
        (3, Value::Number(n)) => {
            let x = n.as_i64().unwrap_or(0);
            *node = json!(*rng.pick(&[x.wrapping_neg(), x.wrapping_mul(1000), x / 3600, 0]));
        }
        (4, Value::String(s)) => *node = json!(s.repeat(1 + rng.below(40))),
        (4, Value::Array(a)) if !a.is_empty() => {
            let mut a = a.clone();
            a.push(a[rng.below(a.len())].clone());
            *node = Value::Array(a);
        }
        (5, Value::String(_)) => *node = json!(""),
        (5, Value::Array(_)) => *node = json!([]),
        (6, Value::Number(_)) => *node = json!(node.to_string()),
        (6, Value::String(s)) => {
            if let Ok(n) = s.parse::<i64>() {
                *node = json!(n);
            }
        }
        _ => *node = hostile(rng),
    }
}
