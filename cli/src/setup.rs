//! Settings shared by the commands: where the data lives, the pseudonymization key, the cuboids,
//! the served countries.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use streamcube_embedded::EmbeddedBackend;
use streamcube_model::cube::CuboidSet;
use streamcube_model::pseudonym::{KeyRing, PseudonymKey, Pseudonymizer};
use streamcube_pipeline::{Pipeline, PipelineConfig};

/// The key file created in a data directory when no key is configured.
pub const KEY_FILE: &str = "pseudonym.key";

/// Where the incremental commands keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// SQLite and a local directory (`--data-dir`).
    Embedded,
    /// A deployed stack's DynamoDB tables, S3 buckets and Glue table, named by the same
    /// `STREAMCUBE_*` variables as the functions (build with `--features aws`).
    Aws,
}

/// The backend a command opened.
pub enum Opened {
    Embedded(EmbeddedBackend),
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    Aws {
        lake_bucket: String,
    },
}

impl Opened {
    /// Where a lake object is, for people.
    pub fn lake_location(&self, key: &str) -> String {
        match self {
            Opened::Embedded(b) => b.dir().join("lake").join(key).display().to_string(),
            Opened::Aws { lake_bucket } => format!("s3://{lake_bucket}/{key}"),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Backend of `ingest`, `consolidate`, `query`, `erase` and `serve`: `aws` runs them against
    /// a deployed stack (backfills), with its names from the `STREAMCUBE_*_TABLE`, `_BUCKET` and
    /// `_GLUE_*` variables and its key from `STREAMCUBE_PSEUDONYM_SECRET_ARN`.
    #[arg(
        long,
        env = "STREAMCUBE_BACKEND",
        value_enum,
        default_value = "embedded",
        global = true
    )]
    pub backend: BackendKind,
    /// Data directory of the embedded backend.
    #[arg(
        long,
        env = "STREAMCUBE_DATA_DIR",
        default_value = ".streamcube",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Pseudonymization key as hex (at least 32 bytes). Without it, a random key is created in
    /// the data directory (`pseudonym.key`, readable by the owner only) and reused; `cube`, which
    /// keeps nothing, draws a fresh one per run, so its unique-viewer estimates above 1,536
    /// viewers can differ slightly between runs unless a key is given.
    #[arg(
        long,
        env = "STREAMCUBE_PSEUDONYM_KEY",
        hide_env_values = true,
        global = true
    )]
    pub pseudonym_key: Option<String>,
    /// A JSON file of rotating keys, `{"keys": [{"key_id", "key", "from"?}, ...]}`: each key
    /// pseudonymizes the events of the days from its `from` on (the oldest has none). Takes
    /// precedence over the single key.
    #[arg(long, env = "STREAMCUBE_PSEUDONYM_KEYRING", global = true)]
    pub pseudonym_keyring: Option<PathBuf>,
    /// Id of the pseudonymization key (recorded so a rotation can be traced).
    #[arg(
        long,
        env = "STREAMCUBE_PSEUDONYM_KEY_ID",
        default_value = "k1",
        global = true
    )]
    pub pseudonym_key_id: String,
    /// Cuboids to materialize: aggregation groups of dimensions, `;` between groups. Every subset
    /// of each group is kept. Example: `country,device,genre;content_id,country`.
    #[arg(
        long,
        env = "STREAMCUBE_CUBOIDS",
        default_value = "country,device,genre,content_id",
        global = true
    )]
    pub cuboids: String,
    /// Countries this deployment accepts (ISO codes, comma-separated; `*` for all).
    #[arg(
        long,
        env = "STREAMCUBE_SERVED_COUNTRIES",
        default_value = "*",
        global = true
    )]
    pub served_countries: String,
}

impl Settings {
    pub fn cuboid_set(&self) -> anyhow::Result<CuboidSet> {
        CuboidSet::parse(&self.cuboids).context("--cuboids")
    }

    /// The configured key, or the data directory's key file (created on first use).
    pub fn key(&self, dir: Option<&Path>) -> anyhow::Result<PseudonymKey> {
        if let Some(hex) = &self.pseudonym_key {
            return PseudonymKey::from_hex(&self.pseudonym_key_id, hex)
                .context("STREAMCUBE_PSEUDONYM_KEY");
        }
        match dir {
            Some(dir) => key_file(dir, &self.pseudonym_key_id),
            None => {
                // A run that keeps nothing needs no stable key: pseudonyms only feed its sketches.
                let secret: [u8; 32] = rand::random();
                Ok(PseudonymKey::from_bytes(
                    &self.pseudonym_key_id,
                    secret.to_vec(),
                )?)
            }
        }
    }

    /// The key ring file when one is configured, else the single key (see [`Self::key`]).
    pub fn keys(&self, dir: Option<&Path>) -> anyhow::Result<KeyRing> {
        match &self.pseudonym_keyring {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                KeyRing::from_json(&text)
                    .with_context(|| format!("the key ring in {} is not valid", path.display()))
            }
            None => Ok(KeyRing::single(self.key(dir)?)),
        }
    }

    pub fn config(&self, keys: &KeyRing) -> anyhow::Result<PipelineConfig> {
        let mut config = PipelineConfig::new(Pseudonymizer::from_ring(keys));
        config.cuboids = self.cuboid_set()?;
        config.served_countries = PipelineConfig::parse_countries(&self.served_countries)
            .map_err(anyhow::Error::msg)
            .context("--served-countries")?;
        Ok(config)
    }

    /// The pipeline on the configured backend.
    pub async fn open(&self) -> anyhow::Result<(Pipeline, Opened)> {
        match self.backend {
            BackendKind::Embedded => {
                let (p, b) = self.embedded()?;
                Ok((p, Opened::Embedded(b)))
            }
            BackendKind::Aws => self.aws().await,
        }
    }

    #[cfg(feature = "aws")]
    async fn aws(&self) -> anyhow::Result<(Pipeline, Opened)> {
        let names = streamcube_aws::AwsNames::from_env(&|k| std::env::var(k).ok())?;
        let aws = streamcube_aws::AwsBackend::connect(names).await;
        let secret = std::env::var("STREAMCUBE_PSEUDONYM_SECRET_ARN").ok();
        let keys = match (&self.pseudonym_key, secret) {
            (Some(_), _) => self.keys(None)?,
            _ if self.pseudonym_keyring.is_some() => self.keys(None)?,
            (None, Some(secret)) => {
                streamcube_aws::secret::load_keys(&aws.secrets, &secret).await?
            }
            (None, None) => bail!(
                "the AWS backend needs the deployment's key: set STREAMCUBE_PSEUDONYM_SECRET_ARN \
                 (the stack's PseudonymSecretArn output); a different key would break \
                 deduplication, unique viewers and erasure"
            ),
        };
        let lake_bucket = aws.names.lake_bucket.clone();
        Ok((
            Pipeline::new(aws.stores()?, self.config(&keys)?),
            Opened::Aws { lake_bucket },
        ))
    }

    #[cfg(not(feature = "aws"))]
    async fn aws(&self) -> anyhow::Result<(Pipeline, Opened)> {
        bail!(
            "this build has no AWS backend: build it with `cargo build --release --features aws \
             --bin streamcube` (it adds the AWS SDK)"
        )
    }

    /// The pipeline on the embedded backend in the data directory.
    pub fn embedded(&self) -> anyhow::Result<(Pipeline, EmbeddedBackend)> {
        let backend = EmbeddedBackend::open(&self.data_dir)?;
        let keys = self.keys(Some(&self.data_dir))?;
        let mut config = self.config(&keys)?;
        // SQLite writes each transaction's dirty pages to its log once: large transactions
        // amortize that over many events (silver keys are random, so pages are spread out).
        config.write_batch = streamcube_embedded::WRITE_BATCH;
        config.write_concurrency = 2;
        let pipeline = Pipeline::new(backend.stores(), config);
        Ok((pipeline, backend))
    }
}

fn key_file(dir: &Path, id: &str) -> anyhow::Result<PseudonymKey> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret: [u8; 32] = rand::random();
        write_private(&path, &hex::encode(secret))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let key = PseudonymKey::from_hex(id, text.trim())
        .with_context(|| format!("the key in {} is not valid", path.display()))?;
    Ok(key)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// Fails when a path that must exist does not.
pub fn must_exist(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(())
}

/// Creates the AWS backend's tables (named by the `STREAMCUBE_*_TABLE` variables) where missing.
#[cfg(feature = "aws")]
pub async fn provision() -> anyhow::Result<()> {
    let names = streamcube_aws::AwsNames::from_env(&|k| std::env::var(k).ok())?;
    let aws = streamcube_aws::AwsBackend::connect(names).await;
    streamcube_aws::provision::create_tables(&aws.dynamo, &aws.names).await?;
    println!(
        "tables ready: {}, {}, {}",
        aws.names.silver_table, aws.names.cube_table, aws.names.catalog_table
    );
    Ok(())
}
