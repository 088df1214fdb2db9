//! The command journal: commands without a source position of their own (gRPC), numbered
//! and made durable before any partition applies them, so that a crash between the
//! partitions' commits can be completed at the next start.

use canvass_proto::v1;
use prost::Message;

use crate::{Error, Result, Store, decode, keys, u64_value};

impl Store {
    /// Appends commands to the journal and makes them durable before returning; returns
    /// the number of the first (numbers start at 1 and only grow, pruned or not).
    pub fn journal_commands(&self, commands: &[v1::JournaledCommand]) -> Result<u64> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        let first = self.journal_end()? + 1;
        let writes = commands
            .iter()
            .zip(first..)
            .map(|(c, n)| (journal_key(n), Some(c.encode_to_vec())))
            .collect();
        self.write(writes, true)?;
        Ok(first)
    }

    /// The journaled commands numbered `from` and after, in order.
    pub fn journal_from(&self, from: u64) -> Result<Vec<(u64, v1::JournaledCommand)>> {
        self.backend
            .range(journal_key(from), journal_key(u64::MAX))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((u64_value(&k[1..]), decode("journaled command", &v)?))
            })
            .collect()
    }

    /// Forgets the journaled commands numbered below `below` (every partition has them);
    /// the last one is kept so that numbering goes on after it.
    pub fn prune_journal(&self, below: u64) -> Result<()> {
        let end = self.journal_end()?;
        let removals: Vec<_> = self
            .backend
            .range(journal_key(0), journal_key(below.min(end)))
            .map(|kv| kv.map(|(k, _)| (k, None)))
            .collect::<Result<_>>()?;
        if removals.is_empty() {
            return Ok(());
        }
        self.write(removals, true)
    }

    /// The number of the last journaled command (0: none yet).
    pub fn journal_end(&self) -> Result<u64> {
        self.last_number(keys::JOURNAL)
    }
}

fn journal_key(n: u64) -> Vec<u8> {
    let mut k = vec![keys::JOURNAL];
    k.extend_from_slice(&n.to_be_bytes());
    k
}
