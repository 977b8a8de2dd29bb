//! Metrics through the `metrics` facade (feature `metrics`): a counter per function and
//! outcome, `idem_outcomes_total{function, outcome}` (the outcomes of the `tracing`
//! events), and a histogram of each call's duration in seconds,
//! `idem_call_duration_seconds{function}`. Install any `metrics` exporter to collect them.

use std::time::Duration;

use crate::outcome::Outcome;
use crate::spec::Spec;

pub(crate) fn outcome(spec: &Spec, outcome: Outcome) {
    metrics::counter!(
        "idem_outcomes_total",
        "function" => spec.name,
        "outcome" => outcome.as_str(),
    )
    .increment(1);
}

pub(crate) fn call_duration(spec: &Spec, elapsed: Duration) {
    metrics::histogram!("idem_call_duration_seconds", "function" => spec.name)
        .record(elapsed.as_secs_f64());
}
