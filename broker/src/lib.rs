//! ringmq-broker: configuration, startup and the process around the shards.
