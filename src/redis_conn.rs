//! The Redis connection: one multiplexed connection that reconnects by itself.
//! Redis is optional for the worker: when it is down, calls fail fast (bounded by
//! `redis.response_timeout`) and callers fall back; `serve` never waits for it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis error: {0}")]
    Command(#[from] redis::RedisError),
}

#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    response_timeout: Duration,
}

impl RedisConnection {
    /// Prepares the connection without opening it: the first command connects,
    /// and a failed one makes the next command reconnect.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let client = redis::Client::open(config.url.as_str()).map_err(RedisError::Url)?;
        // One quick retry per reconnection: while Redis is down, a caller should
        // get its error within the response timeout, not wait out a long backoff.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(RedisError::Url)?;
        Ok(Self {
            manager,
            response_timeout: config.response_timeout,
        })
    }

    /// Runs one command, bounded by the response timeout whatever the connection state.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let mut connection = self.manager.clone();
        tokio::time::timeout(self.response_timeout, command.query_async(&mut connection))
            .await
            .map_err(|_| RedisError::Timeout(self.response_timeout))?
            .map_err(RedisError::from)
    }

    /// A PING round trip: what `/readyz` and the heartbeat call "Redis answers".
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }
}
