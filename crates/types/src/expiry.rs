//! A write's `expires_at` must lie ahead of the request: a past one would store a record that
//! is gone at once, which a client never means (most often it sent seconds, not milliseconds).
//!
//! Imports are exempt on purpose: an export holds records that expired but were not swept
//! yet, and importing it must give the same records back.

use crate::{Millis, RecordError};

/// Below this, an `expires_at` reads as seconds since the epoch (1e11 ms is March 1973; 1e11 s
/// is the year 5138), so the refusal says which unit the field takes.
const LOOKS_LIKE_SECONDS: Millis = 100_000_000_000;

/// The latest time a record may carry, in milliseconds since the epoch: 2^53 (the year
/// 287,396), the largest every `f64` column of the field index holds exactly. Writes, patches
/// and imports hold to the same bound, so every export can be imported again.
pub const MAX_RECORD_TIME: Millis = 1 << 53;

/// Refuses an `expires_at` that is not after `now`, the request's arrival, or that is past
/// [`MAX_RECORD_TIME`].
pub fn check_expiry(expires_at: Option<Millis>, now: Millis) -> Result<(), RecordError> {
    match expires_at {
        Some(at) if at <= now => Err(RecordError::ExpiryNotAhead { at, now }),
        Some(at) if at > MAX_RECORD_TIME => Err(RecordError::ExpiryTooLate { at }),
        _ => Ok(()),
    }
}

pub(crate) fn too_late_message(at: Millis) -> String {
    format!(
        "expires_at: {at} is past the latest time a record may carry, {MAX_RECORD_TIME} (2^53 \
         milliseconds since the Unix epoch, the year 287,396); for a record that never expires, \
         leave expires_at out"
    )
}

pub(crate) fn not_ahead_message(at: Millis, now: Millis) -> String {
    let as_millis = at.saturating_mul(1000);
    // Each hint says what to send instead. A 0 is most often meant as "never expires"
    // (converting it as seconds would still give 0); seconds already past stay past.
    let unit = if at == 0 {
        "; it takes milliseconds since the Unix epoch: for a record that never expires, leave \
         expires_at out (in a patch, send null to clear an expiry)"
            .to_string()
    } else if (1..LOOKS_LIKE_SECONDS).contains(&at) && as_millis > now {
        format!(
            "; it takes milliseconds since the Unix epoch, and {at} looks like seconds: send \
             {as_millis} for that time"
        )
    } else if (1..LOOKS_LIKE_SECONDS).contains(&at) {
        format!(
            "; it takes milliseconds since the Unix epoch, and {at} looks like seconds, but even \
             as seconds it has passed: send a later time in milliseconds"
        )
    } else {
        "; it takes milliseconds since the Unix epoch".to_string()
    };
    format!(
        "expires_at: {at} is not after the time the write was checked ({now}): the record would \
         expire at once{unit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_780_000_000_000;

    #[test]
    fn only_a_future_expiry_passes() {
        assert_eq!(check_expiry(None, NOW), Ok(()));
        assert_eq!(check_expiry(Some(NOW + 1), NOW), Ok(()));
        for past in [NOW, NOW - 1, 0, -5] {
            assert_eq!(
                check_expiry(Some(past), NOW),
                Err(RecordError::ExpiryNotAhead { at: past, now: NOW })
            );
        }
    }

    #[test]
    fn an_expiry_past_2_pow_53_is_refused_as_an_import_would_refuse_it() {
        assert_eq!(check_expiry(Some(MAX_RECORD_TIME), NOW), Ok(()));
        for late in [MAX_RECORD_TIME + 1, i64::MAX] {
            let e = check_expiry(Some(late), NOW).unwrap_err();
            assert_eq!(e, RecordError::ExpiryTooLate { at: late });
            assert!(e.at_record(2).starts_with("records[2].expires_at: "), "{e}");
            assert!(e.to_string().contains("leave expires_at out"), "{e}");
        }
    }

    #[test]
    fn the_message_names_the_field_and_spots_seconds() {
        let secs = NOW / 1000 + 3600;
        let m = check_expiry(Some(secs), NOW).unwrap_err().to_string();
        assert!(m.starts_with("expires_at: "), "{m}");
        assert!(m.contains("milliseconds since the Unix epoch"), "{m}");
        assert!(m.contains("looks like seconds"), "{m}");
        let m = check_expiry(Some(NOW - 1), NOW).unwrap_err().to_string();
        assert!(m.contains("milliseconds"), "{m}");
        assert!(!m.contains("looks like seconds"), "{m}");
        let m = check_expiry(Some(-1), NOW).unwrap_err().to_string();
        assert!(!m.contains("looks like seconds"), "{m}");
    }

    #[test]
    fn each_hint_says_what_to_send_instead() {
        // Seconds ahead: the same time in milliseconds.
        let secs = NOW / 1000 + 3600;
        let m = check_expiry(Some(secs), NOW).unwrap_err().to_string();
        assert!(
            m.contains(&format!("send {} for that time", secs * 1000)),
            "{m}"
        );
        // 0: never "send 0", which is refused again; how to have no expiry instead.
        let m = check_expiry(Some(0), NOW).unwrap_err().to_string();
        assert!(!m.contains("send 0"), "{m}");
        assert!(m.contains("leave expires_at out"), "{m}");
        // Seconds already past: no conversion offered that would be refused again.
        let m = check_expiry(Some(5), NOW).unwrap_err().to_string();
        assert!(!m.contains("send 5000"), "{m}");
        assert!(m.contains("even as seconds it has passed"), "{m}");
    }

    #[test]
    fn a_batch_message_starts_with_the_record_and_its_field() {
        let e = check_expiry(Some(1), NOW).unwrap_err();
        assert!(e.at_record(5).starts_with("records[5].expires_at: "));
        let shadow = RecordError::ShadowedField {
            key: "created_at".into(),
        };
        assert!(shadow.at_record(5).starts_with("records[5].metadata: "));
        assert!(
            RecordError::Empty
                .at_record(0)
                .starts_with("records[0]: a record needs")
        );
        let v = RecordError::NonFiniteVector { position: 7 };
        assert_eq!(v.at_record(2), "records[2].vector[7]: not a finite number");
    }
}
