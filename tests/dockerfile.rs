//! deploy/Dockerfile cannot be built here (no container engine; docs/operating.md, "The
//! image"), so what can be checked without building it is checked: every file it copies from
//! the build context exists and is not excluded by .dockerignore; the dependency layer stubs
//! every target Cargo.toml declares (cargo refuses a manifest with a missing target) before the
//! sources are copied; the build is --locked and --release, with a Rust at least the crate's
//! rust-version; the runtime stage is distroless and runs as a non-root user; the release
//! profile strips debuginfo.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Dockerfile's instructions, continuation lines joined.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
            }
        }
    }
    joined
}

fn ignored() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap();
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(|l| l.trim().to_string()).collect()
}

#[test]
fn every_copied_file_exists_in_the_build_context() {
    let ignored = ignored();
    let mut copied = Vec::new();
    for instruction in instructions() {
        let Some(args) = instruction.strip_prefix("COPY ") else { continue };
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(Path::new(ROOT).join(source).exists(), "COPY {source}: no such file in the build context");
            assert!(
                !ignored.iter().any(|i| source == i || source.starts_with(&format!("{i}/"))),
                "COPY {source}: excluded by .dockerignore"
            );
            copied.push(source.to_string());
        }
    }
    for needed in
        ["Cargo.toml", "Cargo.lock", "build.rs", "csrc", "link", "src", "benches", "scripts/install-build-deps.sh"]
    {
        assert!(copied.iter().any(|c| c == needed), "{needed} is not copied");
    }
}

#[test]
fn dependencies_are_built_from_stubs_before_the_sources_are_copied() {
    let instructions = instructions();
    let position = |what: &str| {
        instructions.iter().position(|i| i.contains(what)).unwrap_or_else(|| panic!("no instruction with {what}"))
    };
    let stub_build = position("echo 'fn main() {}' > src/main.rs");
    let sources = position("COPY src src");
    assert!(position("COPY Cargo.toml Cargo.lock") < stub_build && stub_build < sources);
    let stub = &instructions[stub_build];
    // Every target of Cargo.toml gets a stub (bins, the library, benches).
    let manifest: toml_targets::Manifest = toml_targets::read(&Path::new(ROOT).join("Cargo.toml"));
    for path in manifest.target_paths {
        assert!(
            stub.contains(&format!("> {path}")) || stub.contains(&format!("touch {path}")),
            "no stub for {path}: {stub}"
        );
    }
    // The stub's own artifacts go, or the real sources (older mtimes) would not be rebuilt.
    for artifact in [".fingerprint/divert-webhook-*", "deps/divert_webhook-*", "deps/libdivert_webhook-*"] {
        assert!(stub.contains(&format!("target/release/{artifact}")), "{artifact} is kept after the stub build");
    }
    let builds: Vec<&String> = instructions.iter().filter(|i| i.contains("cargo build")).collect();
    assert_eq!(builds.len(), 2);
    for build in builds {
        assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    }
}

#[test]
fn the_image_is_small_non_root_and_built_with_a_recent_enough_rust() {
    let instructions = instructions();
    let froms: Vec<&String> = instructions.iter().filter(|i| i.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    let rust: Vec<u32> = froms[0]
        .split("rust:")
        .nth(1)
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|n| n.parse().unwrap())
        .collect();
    let required: Vec<u32> = env!("CARGO_PKG_RUST_VERSION").split('.').map(|n| n.parse().unwrap()).collect();
    assert!(rust >= required, "rust:{rust:?} is older than rust-version {required:?}");
    assert!(froms[1].contains("distroless/cc") && froms[1].contains(":nonroot"), "{}", froms[1]);
    let user = instructions.iter().rev().find_map(|i| i.strip_prefix("USER ")).expect("a USER");
    assert!(!user.starts_with("0") && !user.starts_with("root"), "runs as {user}");
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let release = manifest.split("[profile.release]").nth(1).expect("a release profile");
    let release = release.split("\n[").next().unwrap();
    assert!(release.lines().any(|l| l.trim() == r#"strip = "debuginfo""#), "{release}");
}

/// The targets of Cargo.toml, read by hand (the few forms this manifest uses).
mod toml_targets {
    pub struct Manifest {
        pub target_paths: Vec<String>,
    }

    pub fn read(path: &std::path::Path) -> Manifest {
        let text = std::fs::read_to_string(path).unwrap();
        let mut target_paths = vec!["src/lib.rs".to_string()];
        let mut section = String::new();
        let mut name = None;
        let mut explicit = None;
        let mut flush = |section: &str, name: &mut Option<String>, explicit: &mut Option<String>| match (
            section,
            name.take(),
            explicit.take(),
        ) {
            (_, _, Some(path)) => target_paths.push(path),
            ("[[bench]]", Some(name), None) => target_paths.push(format!("benches/{name}.rs")),
            ("[[bin]]", Some(_), None) => target_paths.push("src/main.rs".to_string()),
            _ => {}
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                flush(&section, &mut name, &mut explicit);
                section = line.to_string();
                continue;
            }
            if section.starts_with("[[") {
                let value = |l: &str| l.split('=').nth(1).unwrap().trim().trim_matches('"').to_string();
                if line.starts_with("name") {
                    name = Some(value(line));
                } else if line.starts_with("path") {
                    explicit = Some(value(line));
                }
            }
        }
        flush(&section, &mut name, &mut explicit);
        Manifest { target_paths }
    }
}
