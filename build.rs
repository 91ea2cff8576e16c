//! Links Google RE2 (SPEC §7: regexes are judged by RE2 itself) through the C++ shim in
//! csrc/re2_shim.cc, statically: Debian's `libre2-dev` (`libre2.a`, no Abseil) and libstdc++,
//! so the binary needs no C++ library at run time (deploy/Dockerfile).
//!
//! Without RE2's headers or `libre2.a` the build stops with one line naming the package to
//! install (`bash scripts/install-build-deps.sh` installs it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTALL: &str = "install Debian's libre2-dev (bash scripts/install-build-deps.sh, or apt-get install libre2-dev)";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=csrc/re2_shim.cc");

    let mut build = cc::Build::new();
    build.cpp(true).file("csrc/re2_shim.cc").warnings(true).cpp_link_stdlib(None);
    let compiler = match build.try_get_compiler() {
        Ok(compiler) => compiler,
        Err(e) => fail(&format!("no C++ compiler ({e}); install Debian's g++ (bash scripts/install-build-deps.sh)")),
    };
    if !headers_found(&compiler) {
        fail(&format!("RE2's C++ headers (re2/re2.h) are missing; {INSTALL}"));
    }
    let Some(libre2) = library_path(&compiler, "libre2.a") else {
        fail(&format!("RE2's static library (libre2.a) is missing; {INSTALL}"));
    };
    println!("cargo::rerun-if-changed={}", libre2.display());
    if library_path(&compiler, "libstdc++.a").is_none() {
        fail(
            "the static C++ library (libstdc++.a) is missing; install Debian's g++ (bash scripts/install-build-deps.sh)",
        );
    }

    build.compile("divert_re2_shim");
    let dir = libre2.parent().expect("a library path has a folder");
    println!("cargo::rustc-link-search=native={}", dir.display());
    println!("cargo::rustc-link-lib=static=re2");
    // RE2 and the shim are C++: libstdc++ goes in statically too. Not bundled into the rlib,
    // so it comes after RE2 on the final link line; the compiler driver finds it.
    println!("cargo::rustc-link-lib=static:-bundle=stdc++");
    // Relative relocations packed (DT_RELR, glibc 2.36+, as in Debian 12 and the image): the
    // loader reads 10 KiB of them at start instead of 770 KiB, which stayed resident
    // (BENCHMARKS.md, "Memory of the binary").
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The functions the server runs first in the code, together, so that the pages mapped
    // around each page fault (64 KiB) hold code that runs: 4 MiB less of the binary resident
    // (scripts/symbol-order.sh; BENCHMARKS.md, "Memory: the allocator and the order of the
    // code"). lld's option (the linker of Rust on x86_64 Linux since 1.90); names the file has
    // and the binary has not are skipped without a word.
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    println!("cargo::rerun-if-changed=Cargo.lock");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && order.is_file()
    {
        println!("cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        if std::env::var("PROFILE").as_deref() == Ok("release") {
            warn_if_stale(&order);
        }
    }
}

/// The names in the ordering file carry hashes of the compiler and of each crate's version:
/// made with another compiler or Cargo.lock, most of them no longer match and the binary is
/// back to its larger resident size. Said on release builds, not an error (nothing breaks).
fn warn_if_stale(order: &Path) {
    let text = std::fs::read_to_string(order).unwrap_or_default();
    let stamp = |line: &str| text.lines().find_map(|l| l.strip_prefix(line).map(str::to_owned));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version =
        Command::new(rustc).arg("-V").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let lock = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).ok().map(|bytes| {
        // FNV-1a, as scripts/symbol-order.sh writes it.
        let hash =
            bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
        format!("{hash:016x}")
    });
    if stamp("# rustc: ") != version || stamp("# Cargo.lock: ") != lock {
        println!(
            "cargo::warning=link/symbol-order.txt was made with another compiler or Cargo.lock: the binary \
             works but keeps more of itself resident; regenerate it with bash scripts/symbol-order.sh"
        );
    }
}

/// Stops the build with one line: cargo prints it as `error: ...` and fails the build. The
/// script itself exits 0, or cargo would also dump everything it printed.
fn fail(message: &str) -> ! {
    println!("cargo::error=divert-webhook needs Google RE2 to build: {message}");
    std::process::exit(0);
}

/// Does the compiler find `<re2/re2.h>`? (Preprocesses an include of it.)
fn headers_found(compiler: &cc::Tool) -> bool {
    let child = compiler
        .to_command()
        .args(["-E", "-x", "c++", "-", "-o"])
        .arg(if cfg!(windows) { "NUL" } else { "/dev/null" })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        fail(&format!("cannot run the C++ compiler {:?}; install Debian's g++", compiler.path()));
    };
    let wrote = child.stdin.take().map(|mut stdin| stdin.write_all(b"#include <re2/re2.h>\n").is_ok());
    child.wait().is_ok_and(|status| status.success()) && wrote == Some(true)
}

/// Where the compiler's linker would find `file` (`-print-file-name`), if anywhere.
fn library_path(compiler: &cc::Tool, file: &str) -> Option<PathBuf> {
    let output = Command::new(compiler.path()).arg(format!("-print-file-name={file}")).output().ok()?;
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    // Not found, the compiler prints the bare name back.
    (path.is_absolute() && path.is_file()).then_some(path)
}
