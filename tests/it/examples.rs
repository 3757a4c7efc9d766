//! Every example `help VERB` shows runs, as written, after the quickstart (`use Demo` first, as
//! the examples assume): the help is the test.

use crate::harness::Env;
use tap::commands::VERBS;

/// Lifecycle verbs act on the quickstart flow: they run in an order where each makes sense
/// (started — it already runs —, stopped before reset, copied, deleted last).
const ORDER: &[&str] = &["start", "stop", "reset", "copy", "delete"];

#[test]
fn every_verb_example_runs() {
    let env = Env::new("verb-examples");
    env.tap(&["-f", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.rhai")]).ok();
    let rank = |name: &str| ORDER.iter().position(|v| *v == name).map_or(0, |i| i + 1);
    let mut verbs: Vec<_> = VERBS.iter().collect();
    verbs.sort_by_key(|v| rank(v.name));
    let mut ran = 0;
    for verb in verbs {
        for example in verb.examples {
            let run = env.script(&format!("example-{ran}.rhai"), &format!("use Demo\n{example}\n"));
            assert_eq!(
                run.code, 0,
                "`help {}` shows `{example}`, which fails:\nstdout:\n{}\nstderr:\n{}",
                verb.name, run.stdout, run.stderr
            );
            assert!(!run.stdout.trim().is_empty(), "`{example}` printed nothing");
            ran += 1;
        }
    }
    assert!(ran >= 20, "only {ran} examples");
}
