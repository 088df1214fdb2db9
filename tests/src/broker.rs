//! The real Kafka-protocol broker the Kafka tests run against: started by `scripts/test.sh`
//! (`scripts/kafka.sh`), named by `CANVASS_TEST_KAFKA`. A test that cannot reach it fails.

use std::{
    collections::HashMap,
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

/// Environment variable naming the broker (`host:port`).
pub const BROKER_VAR: &str = "CANVASS_TEST_KAFKA";

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Produce {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Consumed {
    /// The first header called `name`, as text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The payload as text.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A broker the tests can use.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Bootstrap address.
    pub address: String,
}

/// The test broker.
///
/// # Panics
/// If `CANVASS_TEST_KAFKA` is not set or nothing listens there: Kafka tests never skip.
#[must_use]
pub fn broker() -> Broker {
    let address = std::env::var(BROKER_VAR).unwrap_or_else(|_| {
        panic!(
            "{BROKER_VAR} is not set: the Kafka tests need a real broker; run scripts/test.sh \
             (it installs and starts one) or start one with `scripts/kafka.sh start DIR` and \
             set {BROKER_VAR}=127.0.0.1:9092"
        )
    });
    Broker::at(&address)
}

/// Held by a test that runs engines it kills, pauses or restarts, or several at once: such
/// tests take one at a time the two cores they share with the broker, so that a member
/// starved of CPU does not miss its session timeout and leave a group the broker may never
/// rebalance again (a Tansu 0.6 gap, see docs/ARCHITECTURE.md, "Broker gaps"). Lighter tests run beside them.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// A broker at `address`, checked to be listening.
    ///
    /// # Panics
    /// If nothing listens there.
    #[must_use]
    pub fn at(address: &str) -> Self {
        let reachable = address
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok());
        assert!(reachable, "no Kafka broker listens at {address}");
        Self {
            address: address.to_string(),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.address);
        c
    }

    /// Creates a topic.
    ///
    /// # Panics
    /// If the broker refuses.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = futures::executor::block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
        for r in results {
            r.unwrap_or_else(|(topic, e)| panic!("cannot create topic {topic}: {e}"));
        }
    }

    /// Produces records and waits until the broker acknowledged all.
    ///
    /// # Panics
    /// If a record is not acknowledged.
    pub fn produce(&self, records: &[Produce]) {
        self.produce_placed(records, "consistent_random");
    }

    /// Moves `ends` (the end offset of each partition, in partition order) past every
    /// record `placed` reports (what [`Broker::produce_placed`] returns).
    pub fn ends_after(ends: &mut [i64], placed: &[(i32, i64)]) {
        for &(partition, offset) in placed {
            let end = &mut ends[usize::try_from(partition).expect("a partition")];
            *end = (*end).max(offset + 1);
        }
    }

    /// Produces one record to partition `partition`, whatever its key.
    ///
    /// # Panics
    /// If it is not acknowledged.
    pub fn produce_to(&self, r: &Produce, partition: i32) {
        let producer: FutureProducer = self.config().create().expect("producer");
        let mut record = FutureRecord::to(&r.topic)
            .payload(&r.payload)
            .partition(partition);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        futures::executor::block_on(producer.send(record, Duration::from_secs(30)))
            .expect("acknowledged");
    }

    /// Produces records with librdkafka's `partitioner` (e.g. `murmur2_random`, the Java
    /// client's choice for keyed records) and waits until the broker acknowledged all: the
    /// partition and offset of each, in order.
    ///
    /// # Panics
    /// If a record is not acknowledged.
    pub fn produce_placed(&self, records: &[Produce], partitioner: &str) -> Vec<(i32, i64)> {
        let producer: FutureProducer = self
            .config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", partitioner)
            .create()
            .expect("producer");
        let mut deliveries = Vec::new();
        for r in records {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let mut record = FutureRecord::to(&r.topic)
                .payload(&r.payload)
                .headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            if let Some(t) = r.timestamp {
                record = record.timestamp(t);
            }
            deliveries.push(producer.send_result(record).expect("queued"));
        }
        futures::executor::block_on(futures::future::join_all(deliveries))
            .into_iter()
            .map(|d| {
                let delivery = d.expect("delivery future").expect("acknowledged");
                (delivery.partition, delivery.offset)
            })
            .collect()
    }

    /// The end offset of each of `topic`'s `partitions` partitions, in partition order.
    ///
    /// # Panics
    /// If the broker does not answer within 30 s.
    #[must_use]
    pub fn ends(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", format!("reader-{}", unique("g")))
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(30))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Every record of `topic`, up to its end offsets at the time of the call, ordered by
    /// partition and offset.
    ///
    /// # Panics
    /// If the topic cannot be read within a minute.
    #[must_use]
    pub fn read_all(&self, topic: &str) -> Vec<Consumed> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", format!("reader-{}", unique("g")))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(30);
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .expect("metadata");
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(rdkafka::metadata::MetadataPartition::id)
            .collect();
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .expect("watermarks");
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(topic, p, Offset::Offset(low))
                    .expect("partition");
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ends.is_empty() {
            assert!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end offsets {ends:?}"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("record");
            let Some(end) = ends.get(&m.partition()).copied() else {
                continue;
            };
            if m.offset() >= end {
                continue;
            }
            out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
            if m.offset() + 1 >= end {
                ends.remove(&m.partition());
            }
        }
        out.sort_by_key(|c| (c.partition, c.offset));
        out
    }
}

/// A name no other test run uses: topics and groups outlive a test on a shared broker.
#[must_use]
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
