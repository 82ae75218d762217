//! Where and how to connect.

use crate::ports::StoreError;

/// Where and how to connect, parsed from
/// `cql://[user[:pass]@]host:port[,host:port]/keyspace[?replication_factor=N]`.
#[derive(Clone, PartialEq)]
pub struct CqlConfig {
    /// Contact points.
    pub nodes: Vec<String>,
    /// Keyspace (created by `migrate` when missing).
    pub keyspace: String,
    /// Replication factor of a keyspace that `migrate` creates.
    pub replication_factor: u32,
    /// Optional credentials.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication_factor", &self.replication_factor)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
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
        let mut replication_factor = 1;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication_factor", v)) => {
                    replication_factor = v.parse().map_err(|_| bad("bad replication_factor"))?
                }
                _ => return Err(bad(&format!("unknown option `{pair}`"))),
            }
        }
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
            replication_factor,
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
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.credentials, Some(("app".into(), "s3cret".into())));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "debug output hides the password"
        );
        let c = CqlConfig::from_url("cql://app@db:9042/timbre").unwrap();
        assert_eq!(c.credentials, Some(("app".into(), String::new())));
        for bad in [
            "file:///x",
            "cql://host:9042",
            "cql://host:9042/bad-name",
            "cql://h/ks?x=1",
        ] {
            assert_eq!(
                CqlConfig::from_url(bad).unwrap_err().code(),
                "store_config",
                "{bad}"
            );
        }
    }
}
