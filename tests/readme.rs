//! The README stays true: its quick start is two commands, it lists every flag the binary has,
//! and its curl example is what the server answers for that fixture.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn quick_start_is_two_commands_run_the_webhook_and_run_the_tests() {
    let readme = readme();
    let start = readme.find("## Quick start").expect("README starts with a quick start");
    assert!(readme[..start].lines().filter(|l| !l.trim().is_empty()).count() <= 1, "quick start comes first");
    let block = readme[start..].split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].contains("serve --self-signed"), "{}", commands[0]);
    assert_eq!(commands[1], "bash .ci/run");
}

#[test]
fn every_flag_of_every_command_is_in_the_readme() {
    let readme = readme();
    for command in ["serve", "review", "mutate", "check"] {
        let help = Command::new(env!("CARGO_BIN_EXE_divert-webhook")).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        // option lines: "  -f, --filename <FILE>" or "      --driver <DRIVER>"
        let flags = help.lines().filter_map(|l| {
            let l = l.trim_start();
            let l = if l.starts_with('-') && !l.starts_with("--") { l.split_once(", ")?.1 } else { l };
            l.strip_prefix("--").map(|rest| rest.split([' ', '\n']).next().unwrap())
        });
        for flag in flags.filter(|f| *f != "help" && *f != "version").map(|f| format!("--{f}")) {
            assert!(readme.contains(&format!("`{flag}`")), "README does not document {command} {flag}");
        }
    }
}

#[test]
fn the_curl_example_shows_the_real_answer() {
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/namespace-create.json")).unwrap();
    let (answer, _) =
        divert_webhook::review::review(divert_webhook::review::Endpoint::Mutate, &fixture, &Default::default())
            .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(readme().contains(&answer), "README's curl output is not what the server answers:\n{answer}");
}
