"""The systems raftcache is compared with: an etcd cluster, PySyncObj nodes, a bare HTTP floor."""
