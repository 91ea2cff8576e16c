//! The README stays true: its quick start is two commands, it lists every flag the binary has,
//! and its curl example is what the server answers for that fixture.

use clap::CommandFactory as _;

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
    assert!(commands[0].contains("serve --no-cluster --self-signed"), "{}", commands[0]);
    assert_eq!(commands[1], "bash .ci/run");
}

/// The cells of the Markdown table rows in `text` (lines starting with `|`), header and
/// separator rows left out.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| {
            l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| flag") && !l.starts_with("| command")
        })
        .map(|l| l.trim().trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Every flag of every command, as clap defines it, is in the README's Flags section: a flag
/// with an environment variable has a row in the flags table with exactly that variable, that
/// default and that help text; a flag without one is in the table of per-command flags, on the
/// row of its command, with its short form and its default. And the tables name no flag the
/// binary does not have.
#[test]
fn every_flag_of_every_command_is_in_the_readme() {
    let readme = readme();
    let flags = readme.split("\n## Flags\n").nth(1).expect("a Flags section").split("\n## ").next().unwrap();
    let rows = table_rows(flags);
    let with_variable: Vec<&Vec<String>> = rows.iter().filter(|r| r[0].starts_with("`--")).collect();
    let per_command: Vec<&Vec<String>> = rows.iter().filter(|r| !r[0].starts_with("`--")).collect();
    assert!(with_variable.iter().all(|r| r.len() == 4), "flags table rows have 4 cells: {with_variable:?}");
    assert!(per_command.iter().all(|r| r.len() == 3), "per-command rows have 3 cells: {per_command:?}");

    let mut cli = divert_webhook::cli::Cli::command();
    // As when parsing: this fills in what clap derives (the `false` default of boolean flags).
    cli.build();
    let mut documented = std::collections::BTreeSet::new();
    for command in cli.get_subcommands() {
        let name = command.get_name();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let flag = format!("`--{long}`");
            let default: Vec<String> =
                arg.get_default_values().iter().map(|v| v.to_str().unwrap().to_string()).collect();
            let default = default.join(",");
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            match arg.get_env() {
                Some(variable) => {
                    let row = with_variable
                        .iter()
                        .find(|r| r[0] == flag)
                        .unwrap_or_else(|| panic!("README's flags table has no row for {name} {flag}"));
                    assert_eq!(row[1], format!("`{}`", variable.to_str().unwrap()), "environment variable of {flag}");
                    let shown = if default.is_empty() { String::new() } else { format!("`{default}`") };
                    assert_eq!(row[2], shown, "default of {flag}");
                    assert_eq!(row[3], help.trim_end_matches('.'), "meaning of {flag}");
                }
                None => {
                    let row = per_command
                        .iter()
                        .find(|r| r[1].split(", ").any(|f| f == flag) && r[0].contains(&format!("`{name}`")))
                        .unwrap_or_else(|| panic!("README's per-command table has no row for {name} {flag}"));
                    if let Some(short) = arg.get_short() {
                        assert!(row[1].split(", ").any(|f| f == format!("`-{short}`")), "{name} -{short}: {row:?}");
                    }
                    if !default.is_empty() {
                        assert!(
                            row[2].contains(&format!("`{default}` (default)")),
                            "default of {name} {flag}: {row:?}"
                        );
                    }
                }
            }
            documented.insert(flag);
        }
    }
    let named = with_variable
        .iter()
        .map(|r| r[0].clone())
        .chain(per_command.iter().flat_map(|r| r[1].split(", ").filter(|f| f.starts_with("`--")).map(String::from)));
    for flag in named {
        assert!(documented.contains(&flag), "README documents {flag}, which no command has");
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
