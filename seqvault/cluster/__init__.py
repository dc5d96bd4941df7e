"""SeqVault cluster: S virtual shards (each an ordinary store) over Ray (`seqvault[cluster]`).

Modules: `shardmap` (user → shard), `manifest` (the versioned cluster manifest), `ingest`
(Ray Data → per-shard all-or-nothing ingest), `serve` + `shard_server` (supervised shard
servers), `client` (`SeqVaultCluster`: routed reads, scatter-gather, appends, failover),
`training` (Ray Data → LaserReader → padded torch batches), `reshard` (move a shard, grow S),
`admin` (init, status), `runtime` (Ray start-up, timeouts). Design: docs/design/cluster.md;
format: docs/format/cluster.md. Ray is imported only inside the functions that need it.
"""

from .admin import init_cluster, status
from .client import ClusterSequence, SeqVaultCluster
from .manifest import ClusterManifest, Replica, ShardEntry, StaleEpoch, load, publish
from .runtime import ClusterError
from .shardmap import CLUSTER_SEED, HASH_VERSION, jump_hash, shard_of, shards_of

__all__ = ["CLUSTER_SEED", "HASH_VERSION", "ClusterError", "ClusterManifest", "ClusterSequence",
           "Replica", "SeqVaultCluster", "ShardEntry", "StaleEpoch", "init_cluster",
           "jump_hash", "load", "publish", "shard_of", "shards_of", "status"]
