//! Any tokenizer.json the `tokenizers` crate loads, cut to the model's sequence length:
//! a byte-level BPE and a Unigram (Metaspace) tokenizer trained by Python's `tokenizers`
//! (tools/make_tokenizer_goldens.py), whose ids, attention masks, type ids and
//! overflowing windows for the same sentences are the oracle. Neither tokenizer.json
//! carries padding settings, so the front end finds their `<pad>` itself.

use edgetune::session::prep::{Prep, Role, Sample};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/golden/prep")
}

fn nums(s: &str) -> Vec<f32> {
    s.split(',')
        .map(|v| v.parse::<u32>().unwrap() as f32)
        .collect()
}

#[test]
fn bpe_and_unigram_ids_match_python_tokenizers() {
    let sentences = std::fs::read_to_string(dir().join("tok_sentences.txt")).unwrap();
    let sentences: Vec<&str> = sentences.lines().collect();
    assert_eq!(sentences.len(), 5);
    for kind in ["bpe", "unigram"] {
        let json = std::fs::read_to_string(dir().join(format!("tok_{kind}.json"))).unwrap();
        let gold = std::fs::read_to_string(dir().join(format!("tok_{kind}_ids.txt"))).unwrap();
        let prep =
            Prep::text_json(&json, 16, 64, vec![Role::Ids, Role::Mask, Role::Types]).unwrap();
        let mut windows = 0;
        for (i, s) in sentences.iter().enumerate() {
            let Sample::Inputs(sets) = prep.text(s).unwrap() else {
                panic!("text gives input tensors")
            };
            let want: Vec<Vec<&str>> = gold
                .lines()
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .filter(|f| f[0] == i.to_string())
                .collect();
            assert_eq!(sets.len(), want.len(), "{kind} sentence {i}: windows");
            for (w, (set, f)) in sets.iter().zip(&want).enumerate() {
                assert_eq!(set[0], nums(f[2]), "{kind} sentence {i} window {w}: ids");
                assert_eq!(set[1], nums(f[3]), "{kind} sentence {i} window {w}: mask");
                assert_eq!(set[2], nums(f[4]), "{kind} sentence {i} window {w}: types");
                windows += 1;
            }
        }
        println!(
            "{kind}: {windows} windows of 16 ids equal Python tokenizers' for {} sentences",
            sentences.len()
        );
        assert!(
            windows > sentences.len(),
            "{kind}: a long sentence overflowed"
        );
    }
}

#[test]
fn a_broken_tokenizer_or_length_is_a_typed_error() {
    let roles = vec![Role::Ids];
    assert!(matches!(
        Prep::text_json("{\"model\": 1}", 16, 1, roles.clone()),
        Err(edgetune::Error::Invalid { .. })
    ));
    let json = std::fs::read_to_string(dir().join("tok_bpe.json")).unwrap();
    assert!(Prep::text_json(&json, 0, 1, roles.clone()).is_err());
    assert!(Prep::text_json(&json, 16, 0, roles).is_err());
}
