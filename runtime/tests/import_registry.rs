//! The README's "Supported ONNX ops" table is the importer's registry, row for row: a
//! change to the registry that is not pasted into the README fails here with the table
//! to paste.
#![cfg(feature = "onnx")]

use edgetune::import::registry::supported_ops;

const HEADING: &str = "## Supported ONNX ops";

/// The markdown table built from the registry.
fn table() -> String {
    let mut s = String::from("| domain | op | forms that lower |\n|---|---|---|\n");
    for (domain, op, doc) in supported_ops() {
        s += &format!("| {domain} | `{op}` | {doc} |\n");
    }
    s
}

#[test]
fn readme_table_is_the_registry() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let want = table();
    let section = readme
        .split_once(&format!("\n{HEADING}\n"))
        .map(|(_, rest)| {
            let end = rest.find("\n## ").unwrap_or(rest.len());
            &rest[..end]
        });
    // The table rows of the section, so a stale extra row fails too.
    let got: Option<String> = section.map(|s| {
        s.lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    assert!(
        got.as_deref() == Some(want.as_str()) && readme.contains(&want),
        "README.md's \"{HEADING}\" section must hold the registry's table; paste this \
         under the heading:\n\n{want}"
    );
}
