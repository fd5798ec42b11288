//! Operator tools that sit beside the pipeline: recorded fixtures, their
//! replay and export, integrity checks, queue sampling.

pub mod admin_token;
pub mod fixtures;
pub mod integrity;
pub mod queues;
pub mod replay;
pub mod resync;
pub mod state;

/// A duration in seconds as an operator reads it: `45 s`, `12 min`,
/// `3.5 h`, `2.1 d`.
pub fn human_age(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 36.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} d", secs / 86_400.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_in_the_unit_an_operator_expects() {
        assert_eq!(super::human_age(-3.0), "0 s");
        assert_eq!(super::human_age(45.0), "45 s");
        assert_eq!(super::human_age(720.0), "12 min");
        assert_eq!(super::human_age(3.5 * 3600.0), "3.5 h");
        assert_eq!(super::human_age(2.1 * 86_400.0), "2.1 d");
    }
}
