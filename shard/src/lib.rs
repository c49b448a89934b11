//! ringmq-shard: one share-nothing executor per core.
