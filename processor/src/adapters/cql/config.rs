//! Where and how to connect.

use crate::ports::StoreError;

/// Where and how to connect, parsed from
/// `cql://[user[:pass]@]host:port[,host:port]/keyspace[?replication_factor=N | ?dc.<name>=N&…]`.
#[derive(Clone, PartialEq)]
pub struct CqlConfig {
    /// Contact points.
    pub nodes: Vec<String>,
    /// Keyspace (created by `migrate` when missing).
    pub keyspace: String,
    /// Replication of a keyspace that `migrate` creates.
    pub replication: Replication,
    /// Optional credentials.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// How `migrate` replicates a keyspace it creates.
#[derive(Debug, Clone, PartialEq)]
pub enum Replication {
    /// `SimpleStrategy` with this factor: one data centre.
    Simple(u32),
    /// `NetworkTopologyStrategy`: a factor per data centre (`dc.<name>=N`).
    PerDataCentre(Vec<(String, u32)>),
}

impl Replication {
    /// The CQL replication map.
    pub fn cql(&self) -> String {
        match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::PerDataCentre(dcs) => {
                let factors: Vec<String> =
                    dcs.iter().map(|(dc, rf)| format!("'{dc}': {rf}")).collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    factors.join(", ")
                )
            }
        }
    }
}

impl CqlConfig {
    /// Parses a `cql://` URL.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let bad = |m: &str| {
            StoreError::Config(format!("{m} in store url (want cql://host:port/keyspace)"))
        };
        let rest = url
            .strip_prefix("cql://")
            .ok_or_else(|| bad("missing cql:// scheme"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing keyspace"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((cred, hosts)) => {
                // Without `:password` the password comes from TIMBRE_CQL_PASSWORD
                // at connect, which keeps it out of configs.
                let (u, p) = cred.split_once(':').unwrap_or((cred, ""));
                (Some((u.to_string(), p.to_string())), hosts)
            }
            None => (None, authority),
        };
        let valid_ks = !keyspace.is_empty()
            && keyspace.len() <= 48
            && keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_ks {
            return Err(bad("invalid keyspace name"));
        }
        let mut simple: Option<u32> = None;
        let mut per_dc: Vec<(String, u32)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication_factor", v)) => {
                    simple = Some(v.parse().map_err(|_| bad("bad replication_factor"))?)
                }
                Some((k, v)) if k.starts_with("dc.") => {
                    let dc = &k[3..];
                    // Data-centre names go into DDL: letters, digits, - _ . only.
                    let valid = !dc.is_empty()
                        && dc
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !valid {
                        return Err(bad(&format!("invalid data centre `{dc}`")));
                    }
                    let rf = v.parse().map_err(|_| bad("bad data centre factor"))?;
                    per_dc.push((dc.to_string(), rf));
                }
                _ => return Err(bad(&format!("unknown option `{pair}`"))),
            }
        }
        let replication = match (simple, per_dc.is_empty()) {
            (Some(_), false) => {
                return Err(bad("replication_factor and dc.<name> exclude each other"));
            }
            (_, false) => Replication::PerDataCentre(per_dc),
            (rf, true) => Replication::Simple(rf.unwrap_or(1)),
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if nodes.is_empty() {
            return Err(bad("no hosts"));
        }
        Ok(Self {
            nodes,
            keyspace: keyspace.to_string(),
            replication,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let c = CqlConfig::from_url(
            "cql://app:s3cret@10.0.0.1:9042,10.0.0.2:9042/timbre?replication_factor=3",
        )
        .unwrap();
        assert_eq!(c.nodes, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(c.keyspace, "timbre");
        assert_eq!(c.replication, Replication::Simple(3));
        assert_eq!(c.credentials, Some(("app".into(), "s3cret".into())));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "debug output hides the password"
        );
        let c = CqlConfig::from_url("cql://app@db:9042/timbre").unwrap();
        assert_eq!(c.credentials, Some(("app".into(), String::new())));
        assert_eq!(c.replication, Replication::Simple(1));
        let c = CqlConfig::from_url("cql://db:9042/timbre?dc.eu-west=3&dc.us_east=2").unwrap();
        assert_eq!(
            c.replication.cql(),
            "{'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us_east': 2}"
        );
        for bad in [
            "file:///x",
            "cql://host:9042",
            "cql://host:9042/bad-name",
            "cql://h/ks?x=1",
            "cql://h/ks?dc.a'b=1",
            "cql://h/ks?dc.eu=x",
            "cql://h/ks?replication_factor=3&dc.eu=3",
        ] {
            assert_eq!(
                CqlConfig::from_url(bad).unwrap_err().code(),
                "store_config",
                "{bad}"
            );
        }
    }
}
