//! Adaptive reranking state in storage: per (tenant, domain) namespace, one narrative vector
//! per principal and collection and one pheromone per reinforced record, each its own key
//! (built in `keys.rs`) so that feedback rewrites only what it touched and deleting a record
//! deletes its pheromone with one key. Values are encoded in `codec.rs`.

use redb::ReadableTable;
use strata_types::{CollectionName, Domain, RecordId, UserToken};

use crate::StoreError;
use crate::codec::{
    StoredNarrative, StoredPheromone, decode_narrative, decode_pheromone, encode_narrative,
    encode_pheromone,
};
use crate::keys::{self, AdaptiveKey, KeyPrincipal, TenantKey};
use crate::tables::{Reads, Writer, prefix_range};

/// Whose narrative vector: the callers that move it with their feedback and read it in their
/// searches are exactly the callers speaking for the same principal, so one end user's contexts
/// never move another's scores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NarrativePrincipal {
    /// Callers without user tokens (credentials bound to none, naming none). Narratives stored
    /// before narratives had principals read as this one: they mixed every caller's contexts,
    /// so only callers who may speak for the whole tenant keep reading them.
    Shared,
    /// Callers with `user_tokens: ["*"]`.
    AllPrincipals,
    /// Callers speaking for exactly these user tokens.
    Tokens(PrincipalTokens),
}

/// A non-empty set of user tokens in ascending order, each once: one spelling per set, so that
/// it names one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrincipalTokens(Box<[UserToken]>);

impl PrincipalTokens {
    pub fn as_slice(&self) -> &[UserToken] {
        &self.0
    }
}

impl NarrativePrincipal {
    /// The principal of callers speaking for exactly `tokens` (in any order, repeats allowed);
    /// [`NarrativePrincipal::Shared`] when there are none.
    pub fn of_tokens(tokens: impl IntoIterator<Item = UserToken>) -> NarrativePrincipal {
        let set: std::collections::BTreeSet<UserToken> = tokens.into_iter().collect();
        if set.is_empty() {
            NarrativePrincipal::Shared
        } else {
            NarrativePrincipal::Tokens(PrincipalTokens(set.into_iter().collect()))
        }
    }

    /// The tokens, none for [`Shared`](NarrativePrincipal::Shared) and
    /// [`AllPrincipals`](NarrativePrincipal::AllPrincipals).
    pub fn tokens(&self) -> &[UserToken] {
        match self {
            NarrativePrincipal::Tokens(t) => t.as_slice(),
            _ => &[],
        }
    }

    /// Estimated heap bytes of this principal as a map key (for memory estimates).
    pub fn heap_bytes(&self) -> usize {
        match self {
            NarrativePrincipal::Tokens(t) => t
                .as_slice()
                .iter()
                .map(|t| std::mem::size_of::<UserToken>() + t.heap_bytes())
                .sum(),
            _ => 0,
        }
    }

    /// Decodes a key's principal, closed: tokens must be valid and in strictly ascending order
    /// (the one spelling [`keys::adaptive_narrative`] writes).
    fn from_key(p: KeyPrincipal<'_>) -> Result<NarrativePrincipal, StoreError> {
        match p {
            KeyPrincipal::Shared => Ok(NarrativePrincipal::Shared),
            KeyPrincipal::AllPrincipals => Ok(NarrativePrincipal::AllPrincipals),
            KeyPrincipal::Tokens(raw) => {
                let tokens = raw
                    .into_iter()
                    .map(|t| name(t, UserToken::parse))
                    .collect::<Result<Vec<_>, _>>()?;
                if tokens.is_empty() || !tokens.windows(2).all(|w| w[0] < w[1]) {
                    return Err(corrupt("narrative tokens not in ascending order"));
                }
                Ok(NarrativePrincipal::Tokens(PrincipalTokens(tokens.into())))
            }
        }
    }
}

/// One stored piece of adaptive state.
#[derive(Debug, Clone, PartialEq)]
pub enum AdaptiveItem {
    Narrative(NarrativePrincipal, CollectionName, StoredNarrative),
    /// A pheromone, with the user tokens of its record when it was written (`None` for one
    /// stored before they were kept).
    Pheromone(RecordId, StoredPheromone, Option<Vec<UserToken>>),
}

/// One stored piece with the domain of its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveRow {
    pub domain: Domain,
    pub item: AdaptiveItem,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("adaptive key: {what}"))
}

fn name<T>(
    bytes: &[u8],
    parse: impl Fn(String) -> Result<T, strata_types::InvalidName>,
) -> Result<T, StoreError> {
    let s = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    parse(s.to_owned()).map_err(|e| corrupt(&e.to_string()))
}

/// Decodes one adaptive key (its bytes after the tag) and value; closed.
pub(crate) fn decode_row(rest: &[u8], value: &[u8]) -> Result<AdaptiveRow, StoreError> {
    match keys::parse_adaptive(rest).ok_or_else(|| corrupt("malformed"))? {
        AdaptiveKey::Narrative {
            domain,
            collection,
            principal,
        } => Ok(AdaptiveRow {
            domain: name(domain, Domain::parse)?,
            item: AdaptiveItem::Narrative(
                NarrativePrincipal::from_key(principal)?,
                name(collection, CollectionName::parse)?,
                decode_narrative(value)?,
            ),
        }),
        AdaptiveKey::Pheromone { domain, id } => Ok(AdaptiveRow {
            domain: name(domain, Domain::parse)?,
            item: {
                let v = decode_pheromone(value)?;
                AdaptiveItem::Pheromone(name(id, RecordId::parse)?, v.pheromone, v.owners)
            },
        }),
    }
}

/// Reads of adaptive state, for snapshots and write transactions alike.
pub trait AdaptiveReads: Reads {
    /// Every piece of the tenant's adaptive state, or of one namespace when `domain` is given,
    /// in key order.
    fn adaptive_rows(
        &self,
        t: TenantKey,
        domain: Option<&Domain>,
    ) -> Result<Vec<AdaptiveRow>, StoreError> {
        let prefix = match domain {
            Some(d) => keys::adaptive_namespace(t, d),
            None => keys::adaptive_all(t),
        };
        let skip = keys::adaptive_all(t).len();
        let mut out = Vec::new();
        for entry in prefix_range(self.data_table(t)?, &prefix)? {
            let (k, v) = entry?;
            out.push(decode_row(&k[skip..], &v)?);
        }
        Ok(out)
    }

    fn pheromone(
        &self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
    ) -> Result<Option<StoredPheromone>, StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        let v = self.data_table(t)?.get(k.as_slice())?;
        v.map(|v| decode_pheromone(v.value()).map(|v| v.pheromone))
            .transpose()
    }

    /// A principal's narrative of collection `c` in `domain`, as stored.
    fn narrative(
        &self,
        t: TenantKey,
        domain: &Domain,
        principal: &NarrativePrincipal,
        c: &CollectionName,
    ) -> Result<Option<StoredNarrative>, StoreError> {
        let k = keys::adaptive_narrative(t, domain, principal, c);
        let v = self.data_table(t)?.get(k.as_slice())?;
        v.map(|v| decode_narrative(v.value())).transpose()
    }
}

impl<T: Reads> AdaptiveReads for T {}

impl Writer<'_> {
    pub fn put_narrative(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        principal: &NarrativePrincipal,
        c: &CollectionName,
        n: &StoredNarrative,
    ) -> Result<(), StoreError> {
        let k = keys::adaptive_narrative(t, domain, principal, c);
        self.table_mut(t)?
            .insert(k.as_slice(), encode_narrative(n)?.as_slice())?;
        Ok(())
    }

    pub fn delete_narrative(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        principal: &NarrativePrincipal,
        c: &CollectionName,
    ) -> Result<bool, StoreError> {
        let k = keys::adaptive_narrative(t, domain, principal, c);
        Ok(self.table_mut(t)?.remove(k.as_slice())?.is_some())
    }

    pub fn put_pheromone(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
        p: &StoredPheromone,
        owners: &[UserToken],
    ) -> Result<(), StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        self.table_mut(t)?
            .insert(k.as_slice(), encode_pheromone(p, owners)?.as_slice())?;
        Ok(())
    }

    /// Whether there was one to delete.
    pub fn delete_pheromone(
        &mut self,
        t: TenantKey,
        domain: &Domain,
        id: &RecordId,
    ) -> Result<bool, StoreError> {
        let k = keys::adaptive_pheromone(t, domain, id);
        Ok(self.table_mut(t)?.remove(k.as_slice())?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_narrative;

    fn narrative() -> StoredNarrative {
        StoredNarrative {
            vector: vec![0.6, 0.8],
            updates: 3,
            updated_at: 42,
        }
    }

    fn token(s: &str) -> UserToken {
        UserToken::parse(s).unwrap()
    }

    /// A row's key bytes after the tag, as `keys::adaptive_narrative` builds them.
    fn rest(principal: &NarrativePrincipal) -> Vec<u8> {
        let t = TenantKey::from_raw(7);
        let k = keys::adaptive_narrative(
            t,
            &Domain::parse("d").unwrap(),
            principal,
            &CollectionName::parse("text").unwrap(),
        );
        k[keys::adaptive_all(t).len()..].to_vec()
    }

    #[test]
    fn a_narrative_written_before_principals_decodes_as_the_namespace_wide_one() {
        // The exact key bytes of the earlier format: `domain \0 n \0 collection`.
        let value = encode_narrative(&narrative()).unwrap();
        let row = decode_row(b"d\0n\0text", &value).unwrap();
        assert_eq!(
            row.item,
            AdaptiveItem::Narrative(
                NarrativePrincipal::Shared,
                CollectionName::parse("text").unwrap(),
                narrative()
            )
        );
        assert_eq!(rest(&NarrativePrincipal::Shared), b"d\0n\0text");
    }

    #[test]
    fn every_principal_round_trips_through_its_key() {
        let value = encode_narrative(&narrative()).unwrap();
        for p in [
            NarrativePrincipal::Shared,
            NarrativePrincipal::AllPrincipals,
            NarrativePrincipal::of_tokens([token("u:bob")]),
            NarrativePrincipal::of_tokens([token("u:bob"), token("u:alice"), token("u:bob")]),
        ] {
            match decode_row(&rest(&p), &value).unwrap().item {
                AdaptiveItem::Narrative(q, _, n) => assert_eq!((q, n), (p, narrative())),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            NarrativePrincipal::of_tokens(Vec::new()),
            NarrativePrincipal::Shared
        );
    }

    #[test]
    fn token_narrative_keys_decode_closed() {
        let value = encode_narrative(&narrative()).unwrap();
        for bad in [
            &b"d\0u\0text\0u:bob\0u:alice"[..], // not ascending: another spelling of a set
            b"d\0u\0text\0u:bob\0u:bob",        // a token twice
            b"d\0u\0text\0u bob",               // not a token
            b"d\0u\0text",                      // no token
            b"d\0a\0text\0u:bob",               // `["*"]` takes no tokens
        ] {
            assert!(
                matches!(decode_row(bad, &value), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
