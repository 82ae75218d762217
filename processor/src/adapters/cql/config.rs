//! Where and how to connect.

use std::path::PathBuf;

use crate::ports::StoreError;

/// Where and how to connect, parsed from
/// `cql://[user[:pass]@]host:port[,host:port]/keyspace[?replication_factor=N | ?dc.<name>=N&…]`
/// with optional TLS options `tls=true`, `tls_ca=<pem>`, `tls_cert=<pem>&tls_key=<pem>`.
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
    /// TLS to the nodes; `None` is plaintext.
    pub tls: Option<CqlTls>,
}

/// TLS settings of the CQL connections. The server's certificate is always
/// verified, its name or IP address included.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CqlTls {
    /// PEM file of the CA(s) that sign the nodes' certificates; the
    /// system's roots when unset.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and private key of this client, for clusters
    /// that require client certificates.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for CqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CqlConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls)
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
        let (mut tls_on, mut ca, mut cert, mut key) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", v)) => {
                    tls_on = Some(
                        v.parse::<bool>()
                            .map_err(|_| bad("bad tls (true or false)"))?,
                    )
                }
                Some(("tls_ca", v)) if !v.is_empty() => ca = Some(PathBuf::from(v)),
                Some(("tls_cert", v)) if !v.is_empty() => cert = Some(PathBuf::from(v)),
                Some(("tls_key", v)) if !v.is_empty() => key = Some(PathBuf::from(v)),
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
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(bad("tls_cert and tls_key go together")),
        };
        // Any TLS file implies TLS; `tls=false` with one is a contradiction.
        let implied = ca.is_some() || client.is_some();
        let tls = match tls_on {
            Some(false) if implied => return Err(bad("tls=false with tls_* files")),
            Some(true) => Some(CqlTls { ca, client }),
            None if implied => Some(CqlTls { ca, client }),
            _ => None,
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
            tls,
        })
    }
}

impl CqlTls {
    /// The driver's TLS context: peer verification on, the CA and client
    /// certificate loaded. A file that is missing or not PEM is a
    /// configuration error naming the option.
    pub fn context(&self) -> Result<openssl::ssl::SslContext, StoreError> {
        use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode};
        let fail = |what: &str, e: openssl::error::ErrorStack| {
            StoreError::Config(format!("cql tls: {what}: {e}"))
        };
        let mut builder =
            SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| fail("context", e))?;
        builder.set_verify(SslVerifyMode::PEER);
        match &self.ca {
            Some(ca) => builder
                .set_ca_file(ca)
                .map_err(|e| fail(&format!("tls_ca {}", ca.display()), e))?,
            None => builder
                .set_default_verify_paths()
                .map_err(|e| fail("system roots", e))?,
        }
        if let Some((cert, key)) = &self.client {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| fail(&format!("tls_cert {}", cert.display()), e))?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| fail(&format!("tls_key {}", key.display()), e))?;
            builder
                .check_private_key()
                .map_err(|e| fail("tls_key does not match tls_cert", e))?;
        }
        Ok(builder.build())
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
        assert_eq!(c.tls, None);
        let c = CqlConfig::from_url("cql://db:9042/timbre?tls=true").unwrap();
        assert_eq!(c.tls, Some(CqlTls::default()), "system roots");
        let c = CqlConfig::from_url(
            "cql://db:9042/timbre?tls_ca=/etc/ca.pem&tls_cert=/etc/c.pem&tls_key=/etc/c.key",
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(CqlTls {
                ca: Some("/etc/ca.pem".into()),
                client: Some(("/etc/c.pem".into(), "/etc/c.key".into())),
            }),
            "a file implies tls"
        );
        let missing = CqlTls {
            ca: Some("/nonexistent/ca.pem".into()),
            client: None,
        };
        let e = missing.context().unwrap_err();
        assert_eq!(e.code(), "store_config");
        assert!(e.to_string().contains("tls_ca /nonexistent/ca.pem"), "{e}");
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
            "cql://h/ks?tls=yes",
            "cql://h/ks?tls=false&tls_ca=/ca.pem",
            "cql://h/ks?tls_cert=/c.pem",
        ] {
            assert_eq!(
                CqlConfig::from_url(bad).unwrap_err().code(),
                "store_config",
                "{bad}"
            );
        }
    }
}
