//! Contact states and the response-group index.

use canvass_proto::v1;

use crate::{Result, Store, keys, prefix_end, utf8};

impl Store {
    /// A contact's state.
    pub fn contact(&self, partition: u16, id: &str) -> Result<Option<v1::ContactState>> {
        self.get("contact state", &keys::contact(partition, id))
    }

    /// Every contact id of a partition, in id order.
    pub fn contact_ids(&self, partition: u16) -> impl Iterator<Item = Result<String>> + '_ {
        let prefix = keys::contact(partition, "");
        let skip = prefix.len();
        self.scan_prefix(prefix)
            .map(move |kv| utf8("contact key", &kv?.0[skip..]))
    }

    /// The contact ids of a partition that sort after `after` (from the first with `None`),
    /// in id order.
    pub fn contact_ids_after(
        &self,
        partition: u16,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.ids_after(keys::contact(partition, ""), after, "contact key")
    }

    /// The ids (the rest of the key) under `prefix` that sort after `after`, in order.
    pub(crate) fn ids_after(
        &self,
        prefix: Vec<u8>,
        after: Option<&str>,
        what: &'static str,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        let skip = prefix.len();
        let end = prefix_end(&prefix);
        let mut start = prefix;
        if let Some(after) = after {
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        self.scan(start, end)
            .map(move |kv| utf8(what, &kv?.0[skip..]))
    }

    /// The contacts in response group `group` of `campaign`, in id order: a range scan.
    pub fn group_members(
        &self,
        campaign: &str,
        group: &str,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.group_members_after(campaign, group, None)
    }

    /// The contacts of a response group whose ids sort after `after` (a page's last), in id
    /// order.
    pub fn group_members_after(
        &self,
        campaign: &str,
        group: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.ids_after(keys::group_prefix(campaign, group), after, "group key")
    }
}
