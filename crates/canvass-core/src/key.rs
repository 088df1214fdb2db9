//! Idempotency keys: the same state entry always yields the same key for the same action.

/// The key of the `action_index`-th action emitted when `contact_id` entered a state of
/// `campaign_id` at entry number `entry_seq`, on spec `version`.
///
/// Shape: `<campaign>/v<version>/e<entry_seq>/a<action_index>/<contact>`. Campaign ids cannot
/// contain `/` and the middle parts are numeric, so the key parses back unambiguously
/// whatever characters the contact id holds.
#[must_use]
pub fn idempotency_key(
    campaign_id: &str,
    version: u32,
    contact_id: &str,
    entry_seq: u64,
    action_index: usize,
) -> String {
    format!("{campaign_id}/v{version}/e{entry_seq}/a{action_index}/{contact_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_every_part() {
        assert_eq!(
            idempotency_key("b-trial", 2, "c/1", 3, 0),
            "b-trial/v2/e3/a0/c/1"
        );
    }

    #[test]
    fn different_parts_give_different_keys() {
        let base = idempotency_key("c", 1, "x", 1, 0);
        assert_ne!(base, idempotency_key("c", 2, "x", 1, 0));
        assert_ne!(base, idempotency_key("c", 1, "y", 1, 0));
        assert_ne!(base, idempotency_key("c", 1, "x", 2, 0));
        assert_ne!(base, idempotency_key("c", 1, "x", 1, 1));
        assert_ne!(
            idempotency_key("c", 1, "1", 1, 1),
            idempotency_key("c", 1, "1", 11, 1)
        );
    }
}
