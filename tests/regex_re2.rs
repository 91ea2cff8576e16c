//! SPEC §7: VirtualService regexes are judged by Google RE2 itself. Every regex of the corpus
//! and thousands of generated ones go through the webhook's check (an AdmissionReview to
//! /validate's code path) and through the linked RE2 ([`divert_webhook::re2`]), and are
//! compared with a second, independent build of RE2: Python's `google-re2` (`re2.compile`,
//! `.programsize`), run once on the whole batch.
//!
//! That binding is a newer RE2 (2025) than the one linked (Debian's 2022-06). Where they
//! differ, and why, is enumerated in [`VersionDifference`] and docs/validation.md; everything
//! else must agree exactly: compiled or refused, and the program size.

mod support;

use std::collections::BTreeMap;

use divert_webhook::re2::{self, ErrorKind};
use divert_webhook::review::{Endpoint, Outcome};
use divert_webhook::settings::{DEFAULT_MAX_REGEX_PROGRAM_SIZE, Settings};
use serde_json::{Value, json};
use support::{ask, corpus_dir, corpus_objects, review_of};

// --- the patterns -----------------------------------------------------------------------------

/// Every regex in the corpus: the `regex` of each StringMatch and `uriRegexRewrite.match` of the
/// VirtualServices, and the `RegularExpression` values of the HTTPRoutes (Envoy compiles those
/// with RE2 too).
fn corpus_regexes() -> Vec<String> {
    fn walk(node: &Value, in_rewrite: bool, out: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                let regular_expression = map.get("type").and_then(Value::as_str) == Some("RegularExpression");
                for (key, value) in map {
                    match value {
                        Value::String(s) if key == "regex" || in_rewrite && key == "match" => out.push(s.clone()),
                        Value::String(s) if regular_expression && key == "value" => out.push(s.clone()),
                        _ => walk(value, key == "uriRegexRewrite", out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, false, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, object) in corpus_objects("virtualservices", "VirtualService") {
        walk(&object["spec"], false, &mut out);
    }
    // Not through `corpus_objects`: a few HTTPRoute files have YAML it refuses (duplicate
    // keys); none of those has a regex.
    let mut files: Vec<_> =
        std::fs::read_dir(corpus_dir().join("httproutes")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        match serde_saphyr::from_multiple::<Value>(&text) {
            Ok(documents) => documents.iter().for_each(|d| walk(&d["spec"], false, &mut out)),
            Err(e) => assert!(!text.contains("RegularExpression"), "{}: {e}", path.display()),
        }
    }
    out
}

/// Edge cases of RE2's syntax, valid and invalid: each was once a difference between RE2 and an
/// emulation of it (the webhook's check before it linked RE2).
const EDGE_CASES: &[&str] = &[
    "",
    r"^(.*,)?[ \t]*okteto-divert[ \t]*=[ \t]*cindy[ \t]*([;,].*)?$",
    r"(?P<version>v\d+)",
    r"(?<version>v\d+)",
    r"[[:alpha:]_]+\z",
    r"[[:^space:][:word:]]",
    r"(?U)a+?",
    r"a{1000}",
    r"(a{100}){10}",
    r"(?:a*)*",
    r"\x{41}\x41\t\v",
    r"^*",
    r"\Qa.b*c\E+",
    r"\Q[literal",
    r"\0",
    r"\012x",
    r"\123",
    r"[a[]",
    r"[]a]",
    r"[a&&b~~]",
    r"\<word\>",
    r"\b{start}",
    r"\b{2}",
    r"\_\%\ ",
    "a{,3}",
    "x{2}{",
    "a{01}",
    "(?P<1st>x)",
    "[a-b-c]",
    "[!--]",
    "[[:]",
    r"[\d-z]",
    r"[\w-\d]",
    r"[\d--/]",
    r"[[:alpha:]-z]",
    r"[\pL-z]",
    r"\x{D800}",
    r"[\x{D800}-\x{DFFF}]",
    r"[\x{D7FF}-\x{D800}]",
    r"[\x{DFFF}-\x{E000}]",
    r"[ \t\x41\x{42}\101-\132\]\-]",
    "a(?=b)",
    "a(?<!b)",
    r"(a)\1",
    "(ab",
    "ab)",
    "a**",
    "a{2}{3}",
    "a++",
    "a*{2}",
    "a{1001}",
    "(a{100}){11}",
    "((((a{10}){10}){10}){2})",
    "(?x)a b",
    "(?u:a)",
    "[[:foo:]]",
    "[a--b]",
    r"\u0041",
    r"[\u{41}]",
    "(?P<a.b>x)",
    "(?P<n>a)(?P<n>b)",
    "(?P<é>x)",
    r"\C",
    "a(?i)+",
    "(?)",
    r"\e",
    "x{2,1}",
    "[z-a]",
    r"\p{Greek",
    r"[\p{Gr]eek}]",
    r"[a-\d]",
    r"[\x{DA00}-\x{D900}]",
    r"[\x{D800}-\x{D7FF}]",
    r"\x{110000}",
    r"[\b]",
    "[]",
    "\\",
    "a\0b",
    "\u{10FFFF}",
];

/// Deterministic (xorshift, fixed seed) patterns that mix what matters to RE2: Unicode classes
/// (`\pL`, `\p{Greek}`, `\PN`, in and out of brackets), counted repetitions up to and past
/// 1000, nested groups, anchors, flags, named groups, and invalid syntax.
fn generated_patterns(count: usize) -> Vec<String> {
    const LITERALS: &[&str] = &["a", "b", "/", "-", "é", "0", "x", "\\.", "\\x{41}", "\\Q.*\\E", "\\n", "日"];
    const CLASSES: &[&str] = &[
        ".",
        "\\d",
        "\\w",
        "\\s",
        "\\D",
        "[a-z]",
        "[^/]",
        "[a-zA-Z0-9_-]",
        "[[:alpha:]]",
        "[[:^space:]]",
        "\\C",
        "[\\d\\-z]",
    ];
    const UNICODE: &[&str] = &[
        "\\pL",
        "\\pN",
        "\\PN",
        "\\p{Greek}",
        "\\P{Greek}",
        "\\p{^Greek}",
        "\\p{Lu}",
        "\\p{Han}",
        "\\p{Cyrillic}",
        "\\p{Latin}",
        "\\p{Any}",
        "[\\pL\\pN_-]",
        "[^\\p{Greek}]",
        "[\\p{Lu}\\d]",
        "\\p{Kawi}",
        "\\p{Nag_Mundari}",
        "\\p{Vithkuqi}",
        "\\p{Garay}",
        "\\p{Grek}",
        "\\p{greek}",
    ];
    const ANCHORS: &[&str] = &["^", "$", "\\A", "\\z", "\\b", "\\B", "(?m:^)"];
    const FLAGS: &[&str] = &["(?i)", "(?s)", "(?m)", "(?U)", "(?i-s)", "(?x)", "(?u)", "(?)"];
    const INVALID: &[&str] = &[
        "(",
        ")",
        "(?=a)",
        "(?!a)",
        "(?<=a)",
        "(?<!a)",
        "\\1",
        "**",
        "a++",
        "[z-a]",
        "\\e",
        "[[:foo:]]",
        "x{2,1}",
        "\\u0041",
        "[",
        "(?P<1>a)",
        "(?P<n>a)(?P<n>b)",
        "\\",
    ];
    const COUNTS: &[u32] = &[0, 1, 2, 3, 5, 10, 16, 64, 100, 255, 500, 1000, 1001];

    struct Xorshift(u64);
    impl Xorshift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    fn repetition(g: &mut Xorshift) -> String {
        match g.below(14) {
            0 => "*".into(),
            1 => "+".into(),
            2 => "?".into(),
            3 => "*?".into(),
            4..=7 => {
                let n = COUNTS[g.below(COUNTS.len())];
                match g.below(3) {
                    0 => format!("{{{n}}}"),
                    1 => format!("{{{n},}}"),
                    _ => format!("{{{n},{}}}", COUNTS[g.below(COUNTS.len())]),
                }
            }
            _ => String::new(),
        }
    }

    fn sequence(g: &mut Xorshift, depth: usize) -> String {
        let mut out = String::new();
        for i in 0..1 + g.below(4) {
            if i > 0 && g.below(6) == 0 {
                out.push('|');
            }
            let atom = match g.below(20) {
                0..=4 => g.pick(LITERALS).to_string(),
                5..=8 => g.pick(CLASSES).to_string(),
                9..=11 => g.pick(UNICODE).to_string(),
                12 => g.pick(ANCHORS).to_string(),
                13 => g.pick(FLAGS).to_string(),
                14 => g.pick(INVALID).to_string(),
                _ if depth < 3 => {
                    let open = ["(", "(?:", "(?P<g>", "(?<g>", "(?i:"][g.below(5)];
                    format!("{open}{})", sequence(g, depth + 1))
                }
                _ => g.pick(LITERALS).to_string(),
            };
            out.push_str(&atom);
            out.push_str(&repetition(g));
        }
        out
    }

    let mut g = Xorshift(0x9e37_79b9_7f4a_7c15);
    (0..count).map(|_| sequence(&mut g, 0)).collect()
}

// --- Google RE2 through Python -------------------------------------------------------------

/// What Python's `google-re2` says of each pattern: `Ok(program size)` or `Err(error text)`.
/// `None` when it is not installed, unless `DIVERT_REQUIRE_RE2=1` says it must be.
fn python_re2(patterns: &[String]) -> Option<Vec<Result<usize, String>>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const SCRIPT: &str = "import json, sys, re2\n\
        out = []\n\
        for p in json.load(sys.stdin):\n\
        \x20   try:\n\
        \x20       out.append([True, re2.compile(p).programsize])\n\
        \x20   except re2.error as e:\n\
        \x20       out.append([False, str(e)])\n\
        print(json.dumps(out))";
    let required = std::env::var("DIVERT_REQUIRE_RE2").is_ok_and(|v| v == "1");
    let probe = Command::new("python3").args(["-c", "import re2"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(!required, "python3 with google-re2 is required (DIVERT_REQUIRE_RE2=1)");
        eprintln!("skipped: python3 with google-re2 is not installed");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null()) // RE2 logs every error
        .spawn()
        .expect("python3 starts");
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(patterns).unwrap()).unwrap();
    let output = child.wait_with_output().expect("python3 answers");
    assert!(output.status.success(), "the RE2 script failed");
    let answers: Vec<(bool, Value)> = serde_json::from_slice(&output.stdout).expect("a JSON list");
    Some(
        answers
            .into_iter()
            .map(|(ok, v)| if ok { Ok(v.as_u64().unwrap() as usize) } else { Err(v.as_str().unwrap().to_string()) })
            .collect(),
    )
}

// --- the webhook's verdict -------------------------------------------------------------------

/// Is `pattern`, as the `uri` regex of a VirtualService route, denied by the validating
/// webhook? (The message, when it is.)
fn webhook_denial(pattern: &str, settings: &Settings) -> Option<String> {
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "staging"},
        "spec": {"hosts": ["api"], "http": [{"match": [{"uri": {"regex": pattern}}], "route": [{"destination": {"host": "api"}}]}]}
    });
    let answer = ask(Endpoint::Validate, &review_of(&vs), settings);
    match answer.outcome {
        Outcome::Denied => Some(answer.response["status"]["message"].as_str().unwrap().to_string()),
        _ => None,
    }
}

// --- the comparison ----------------------------------------------------------------------------

/// Where the linked RE2 (Debian 2022-06) and Python's (2025) differ, by cause. Measured on
/// this test's patterns; docs/validation.md has the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionDifference {
    /// `(?<name>...)`: the newer RE2 accepts it, like `(?P<name>...)`; the linked one refuses
    /// it ("invalid perl operator: (?<"), so the webhook denies it.
    AngleBracketGroupName,
    /// A repeated empty-width assertion (`^{10}`, `\b+`, `\A(?i){100}`): the newer RE2
    /// simplifies such repetitions (`^{1000}` is one `^`), the linked one compiles them as
    /// written, so the program sizes differ (mostly the linked one's is larger).
    RepeatedEmptyWidth,
    /// Unicode classes (`\pL`, `\p{Han}`): the tables differ (newer Unicode), so the same class
    /// has other ranges and the program another size; both compile the same patterns.
    UnicodeTables,
}

/// Why the two builds may judge `pattern` differently, if a known cause applies.
fn version_difference(
    pattern: &str,
    linked: &Result<usize, re2::Refusal>,
    python: &Result<usize, String>,
) -> Option<VersionDifference> {
    let angle_group = regex::Regex::new(r"\(\?<[^=!]").unwrap().is_match(pattern);
    // An assertion, maybe in a group of its own or followed by flag groups, then a repetition.
    let repeated_assertion =
        regex::Regex::new(r"(\^|\$|\\[AzbB]|\(\?m:\^\)|\(\?:\\[bB]\))(\(\?[a-zA-Z-]*\))*(\*|\+|\?|\{[0-9])")
            .unwrap()
            .is_match(pattern);
    let unicode_class = pattern.contains("\\p") || pattern.contains("\\P");
    match (linked, python) {
        (Err(refusal), Ok(_)) if angle_group && refusal.kind == ErrorKind::BadPerlOp && refusal.argument == "(?<" => {
            Some(VersionDifference::AngleBracketGroupName)
        }
        (Ok(_), Ok(_)) if repeated_assertion => Some(VersionDifference::RepeatedEmptyWidth),
        (Ok(_), Ok(_)) if unicode_class => Some(VersionDifference::UnicodeTables),
        _ => None,
    }
}

/// Every Unicode class name RE2 knows (scripts by their long names, general categories, Any),
/// and near misses: other spellings, short script names, Unicode 16 scripts, long category
/// names.
fn unicode_class_patterns() -> Vec<String> {
    const NAMES: &str = "Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak \
        Bengali Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma \
        Cham Cherokee Chorasmian Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru \
        Dogra Duployan Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati \
        Gunjala_Gondi Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited \
        Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi \
        Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian \
        Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui \
        Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani Myanmar Nabataean Nag_Mundari \
        Nandinagari New_Tai_Lue Newa Nko Nushu Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic \
        Old_North_Arabian Old_Permic Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage \
        Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan \
        Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese Syloti_Nagri \
        Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan Tifinagh \
        Tirhuta Toto Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square \
        C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs Any \
        Garay Todhri Sunuwar Gurung_Khema Kirat_Rai Ol_Onal Tulu_Tigalari Grek Latn Hani Zyyy Zinh Zzzz Unknown \
        Cn LC L& Letter Uppercase_Letter Alphabetic sc=Greek greek GREEK IsGreek";
    NAMES
        .split_whitespace()
        .flat_map(|name| [format!("\\p{{{name}}}"), format!("[^\\P{{{name}}}a]"), format!("\\p{{^{name}}}+")])
        .collect()
}

#[test]
fn corpus_and_generated_regexes_agree_with_google_re2() {
    let corpus = corpus_regexes();
    assert!(corpus.len() >= 20, "only {} corpus regexes", corpus.len());
    let mut patterns = corpus.clone();
    patterns.extend(EDGE_CASES.iter().map(|p| p.to_string()));
    patterns.extend(unicode_class_patterns());
    // DIVERT_REGEX_CASES=30000 runs more by hand (docs/validation.md has such a run).
    let generated = std::env::var("DIVERT_REGEX_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    patterns.extend(generated_patterns(generated));
    patterns.extend([r"\pL{1000}", r"[\pL\pN_-]{1,64}"].map(String::from));
    let Some(python) = python_re2(&patterns) else { return };

    let limit = DEFAULT_MAX_REGEX_PROGRAM_SIZE;
    let settings = Settings::default();
    let mut exact = 0;
    let mut explained: BTreeMap<VersionDifference, Vec<String>> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for (pattern, python) in patterns.iter().zip(&python) {
        let linked = re2::compile(pattern);
        // The webhook denies exactly what the linked RE2 refuses or sizes above the limit.
        let denial = webhook_denial(pattern, &settings);
        let should_deny = pattern.len() > 1024 || linked.as_ref().map_or(true, |&size| size > limit);
        assert_eq!(denial.is_some(), should_deny, "{pattern:?}: linked RE2 {linked:?}, webhook {denial:?}");

        let same = match (&linked, python) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if same {
            exact += 1;
            continue;
        }
        let python_would_deny = pattern.len() > 1024 || python.as_ref().map_or(true, |&size| size > limit);
        let flip = if python_would_deny == should_deny { "" } else { " [verdict differs]" };
        let line = format!("{pattern:?}: linked {linked:?}, python {python:?}{flip}");
        match version_difference(pattern, &linked, python) {
            Some(cause) => explained.entry(cause).or_default().push(line),
            None => unexplained.push(line),
        }
    }
    for (cause, lines) in &explained {
        let flips = lines.iter().filter(|l| l.ends_with("[verdict differs]")).count();
        eprintln!("{cause:?}: {} patterns, {flips} judged otherwise at the limit {limit}, e.g.", lines.len());
        lines.iter().take(3).for_each(|line| eprintln!("  {line}"));
    }
    eprintln!("{exact} of {} agree exactly", patterns.len());
    // Only `(?<name>...)` is judged otherwise by the webhook than it would be by the newer RE2.
    let flips: Vec<&String> = explained
        .iter()
        .filter(|(cause, _)| **cause != VersionDifference::AngleBracketGroupName)
        .flat_map(|(_, lines)| lines.iter().filter(|l| l.ends_with("[verdict differs]")))
        .collect();
    assert!(flips.is_empty(), "verdicts that differ with a newer RE2: {flips:#?}");
    assert!(unexplained.is_empty(), "{} unexplained disagreements:\n{}", unexplained.len(), unexplained.join("\n"));
    // Every corpus regex compiles in both and agrees exactly (none uses a Unicode class).
    for (pattern, python) in corpus.iter().zip(&python) {
        assert_eq!(re2::compile(pattern).ok(), python.clone().ok(), "corpus regex {pattern:?}");
    }
}

/// docs/validation.md quotes the real messages for tests/fixtures/invalid-regexes.yaml.
#[test]
fn the_validation_doc_quotes_the_real_regex_denials() {
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/validation.md")).unwrap();
    let marker = "Real output of `divert-webhook check -f tests/fixtures/invalid-regexes.yaml`";
    let after = &doc[doc.find(marker).expect("the doc names the fixture")..];
    let block = after.split("```\n").nth(1).expect("a fenced block after it");
    let fixture = std::fs::read_to_string(format!("{root}/tests/fixtures/invalid-regexes.yaml")).unwrap();
    let report = divert_webhook::manifests::check_documents(&fixture, &Settings::default());
    let denials: Vec<&str> =
        report.stderr.iter().filter_map(|l| l.strip_prefix("denied: ")).filter(|l| l.contains(": spec.")).collect();
    assert_eq!(denials.len(), 8, "{:?}", report.stderr);
    assert_eq!(block, denials.join("\n") + "\n");
}
