//! The Nexmark benchmark's events: an auction site's persons, auctions and
//! bids, with the reference generator's proportions and distributions
//! (Beam's and Flink's `NexmarkGenerator`: 1 person : 3 auctions : 46 bids,
//! hot auctions, sellers and bidders, event time advancing with the event
//! number at a given rate, optional out-of-order groups).
//!
//! Unlike the reference, which draws from one random stream in order, each
//! event's values come from a generator seeded by the event's number, so
//! any range of events can be made again, alone and in any order: a
//! re-run of a batch, or one of several producers, makes the same events.

mod source;

use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub(crate) use source::EventBatches;
pub use source::{NexmarkSource, NexmarkTableFactory, NexmarkTableProvider};

/// Ids start here so that joins find matches even on few events.
pub const FIRST_PERSON_ID: i64 = 1000;
pub const FIRST_AUCTION_ID: i64 = 1000;
pub const FIRST_CATEGORY_ID: i64 = 10;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const BID_PROPORTION: u64 = 46;
const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Few categories, so that per-category queries find results.
const NUM_CATEGORIES: u64 = 5;
/// Ids a little ahead of the last one generated may be referred to, so a
/// bid may come before its auction, as in the reference.
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// A hot seller, bidder or auction is the first of each group this big.
const HOT_GROUP: u64 = 100;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const CHANNELS: u64 = 10_000;
const MIN_STRING_LENGTH: u64 = 3;

const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];

/// The suite's three streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    pub const ALL: [NexmarkTable; 3] = [Self::Person, Self::Auction, Self::Bid];

    /// The table's (and topic's) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Auction => "auction",
            Self::Bid => "bid",
        }
    }

    /// The table's columns with the suite's field names, in the suite's order.
    pub fn fields(self) -> &'static [(&'static str, FieldKind)] {
        use FieldKind::{Int, Text, Time};
        match self {
            Self::Person => &[
                ("id", Int),
                ("name", Text),
                ("emailAddress", Text),
                ("creditCard", Text),
                ("city", Text),
                ("state", Text),
                ("dateTime", Time),
                ("extra", Text),
            ],
            Self::Auction => &[
                ("id", Int),
                ("itemName", Text),
                ("description", Text),
                ("initialBid", Int),
                ("reserve", Int),
                ("dateTime", Time),
                ("expires", Time),
                ("seller", Int),
                ("category", Int),
                ("extra", Text),
            ],
            Self::Bid => &[
                ("auction", Int),
                ("bidder", Int),
                ("price", Int),
                ("channel", Text),
                ("url", Text),
                ("dateTime", Time),
                ("extra", Text),
            ],
        }
    }

    /// The table's columns as DDL (names quoted where SQL would fold them to
    /// lower case, since JSON fields match exactly).
    pub fn columns(self) -> String {
        let columns: Vec<String> = self
            .fields()
            .iter()
            .map(|(name, kind)| {
                let sql_type = kind.sql_type();
                if name.chars().any(|c| c.is_ascii_uppercase()) {
                    format!("\"{name}\" {sql_type}")
                } else {
                    format!("{name} {sql_type}")
                }
            })
            .collect();
        columns.join(", ")
    }

    fn of_event(id: u64) -> NexmarkTable {
        match id % PROPORTION_DENOMINATOR {
            r if r < PERSON_PROPORTION => Self::Person,
            r if r < PERSON_PROPORTION + AUCTION_PROPORTION => Self::Auction,
            _ => Self::Bid,
        }
    }
}

/// A column's type: a BIGINT, a VARCHAR or a TIMESTAMP (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Int,
    Text,
    Time,
}

impl FieldKind {
    pub fn sql_type(self) -> &'static str {
        match self {
            FieldKind::Int => "BIGINT",
            FieldKind::Text => "VARCHAR",
            FieldKind::Time => "TIMESTAMP",
        }
    }
}

/// What shapes the events: the reference generator's settings, with its
/// defaults (Flink's `NexmarkConfiguration`).
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Event time of event 0, in milliseconds since the epoch.
    pub base_time_ms: i64,
    /// Events per second of event time: event n happens n / rate seconds
    /// after the base time.
    pub events_per_second: u64,
    /// Events are shuffled within groups of this many (1: in order), so
    /// event time goes back by up to a group's span.
    pub out_of_order_group: u64,
    /// One bid in this many is for a cold auction (the rest for hot ones).
    pub hot_auction_ratio: u64,
    pub hot_sellers_ratio: u64,
    pub hot_bidders_ratio: u64,
    /// People who may bid or sell at any time.
    pub active_people: u64,
    /// Auctions that may receive bids at any time.
    pub in_flight_auctions: u64,
    /// Average sizes in bytes, which the `extra` column pads events to.
    pub avg_person_bytes: usize,
    pub avg_auction_bytes: usize,
    pub avg_bid_bytes: usize,
    /// Varies every value while keeping the shapes.
    pub seed: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            base_time_ms: 0,
            events_per_second: 10_000_000,
            out_of_order_group: 1,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            active_people: 1000,
            in_flight_auctions: 100,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    #[serde(serialize_with = "timestamp")]
    pub date_time: i64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    #[serde(serialize_with = "timestamp")]
    pub date_time: i64,
    #[serde(serialize_with = "timestamp")]
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: String,
    pub url: String,
    #[serde(serialize_with = "timestamp")]
    pub date_time: i64,
    pub extra: String,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    pub fn table(&self) -> NexmarkTable {
        match self {
            Event::Person(_) => NexmarkTable::Person,
            Event::Auction(_) => NexmarkTable::Auction,
            Event::Bid(_) => NexmarkTable::Bid,
        }
    }

    /// What the event is about: a person's or an auction's id, a bid's auction.
    pub fn key(&self) -> i64 {
        match self {
            Event::Person(p) => p.id,
            Event::Auction(a) => a.id,
            Event::Bid(b) => b.auction,
        }
    }

    /// Event time, in milliseconds since the epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The event as one JSON object with the suite's field names.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let written = match self {
            Event::Person(p) => serde_json::to_writer(out, p),
            Event::Auction(a) => serde_json::to_writer(out, a),
            Event::Bid(b) => serde_json::to_writer(out, b),
        };
        written.expect("an event serializes");
    }
}

/// Timestamps as `2026-12-01 09:00:00.000`, which Flink's Nexmark tables
/// and Arrow's JSON reader both take.
fn timestamp<S: serde::Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    let time = chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default();
    serializer.collect_str(&time.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// Makes the events of a Nexmark stream by number.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    /// Microseconds of event time between two events.
    inter_event_delay_us: f64,
    hot_urls: [String; 4],
}

impl NexmarkGenerator {
    pub fn new(config: NexmarkConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x006e_6578_6d61_726b);
        let hot_urls = std::array::from_fn(|_| base_url(&mut rng));
        NexmarkGenerator {
            inter_event_delay_us: 1_000_000.0 / config.events_per_second.max(1) as f64,
            config,
            hot_urls,
        }
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The `number`th event of the stream (from 0).
    pub fn event(&self, number: u64) -> Event {
        // Within an out-of-order group, events swap ids and times.
        let id = self.adjusted(number);
        let date_time = self.timestamp_of(id);
        let mut rng = SmallRng::seed_from_u64(
            self.config.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17),
        );
        match NexmarkTable::of_event(id) {
            NexmarkTable::Person => Event::Person(self.person(id, &mut rng, date_time)),
            NexmarkTable::Auction => Event::Auction(self.auction(id, &mut rng, date_time)),
            NexmarkTable::Bid => Event::Bid(self.bid(id, &mut rng, date_time)),
        }
    }

    /// Which stream the `number`th event belongs to, without making it.
    pub fn table_of(&self, number: u64) -> NexmarkTable {
        NexmarkTable::of_event(self.adjusted(number))
    }

    /// The latest event time before which no event after `number` goes:
    /// a perfect watermark for a stream read in order up to `number`.
    pub fn watermark_after(&self, number: u64) -> i64 {
        let group = self.config.out_of_order_group.max(1);
        self.timestamp_of((number + 1) / group * group)
    }

    fn adjusted(&self, number: u64) -> u64 {
        let group = self.config.out_of_order_group.max(1);
        number / group * group + number.wrapping_mul(953) % group
    }

    fn timestamp_of(&self, id: u64) -> i64 {
        self.config.base_time_ms + (id as f64 * self.inter_event_delay_us / 1000.0) as i64
    }

    fn person(&self, id: u64, rng: &mut SmallRng, date_time: i64) -> Person {
        let name = format!(
            "{} {}",
            FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
            LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
        );
        let email_address = format!("{}@{}.com", next_string(rng, 7), next_string(rng, 5));
        let mut credit_card = String::with_capacity(19);
        for i in 0..4 {
            if i > 0 {
                credit_card.push(' ');
            }
            let _ = write!(credit_card, "{:04}", rng.random_range(0..10_000));
        }
        let city = US_CITIES[rng.random_range(0..US_CITIES.len())];
        let state = US_STATES[rng.random_range(0..US_STATES.len())];
        let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + 2;
        Person {
            id: last_person(id) as i64 + FIRST_PERSON_ID,
            extra: next_extra(rng, size, self.config.avg_person_bytes),
            name,
            email_address,
            credit_card,
            city,
            state,
            date_time,
        }
    }

    fn auction(&self, id: u64, rng: &mut SmallRng, date_time: i64) -> Auction {
        let seller = if is_hot(rng, self.config.hot_sellers_ratio) {
            last_person(id) / HOT_GROUP * HOT_GROUP
        } else {
            self.next_person(id, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.random_range(0..NUM_CATEGORIES) as i64;
        let initial_bid = next_price(rng);
        let expires = date_time + self.auction_length_ms(id, rng, date_time);
        let item_name = next_string(rng, 20);
        let description = next_string(rng, 100);
        let reserve = initial_bid + next_price(rng);
        let size = 8 + item_name.len() + description.len() + 8 * 5;
        Auction {
            id: last_auction(id) as i64 + FIRST_AUCTION_ID,
            extra: next_extra(rng, size, self.config.avg_auction_bytes),
            item_name,
            description,
            initial_bid,
            reserve,
            date_time,
            expires,
            seller: seller as i64 + FIRST_PERSON_ID,
            category,
        }
    }

    fn bid(&self, id: u64, rng: &mut SmallRng, date_time: i64) -> Bid {
        let auction = if is_hot(rng, self.config.hot_auction_ratio) {
            last_auction(id) / HOT_GROUP * HOT_GROUP
        } else {
            self.next_auction(id, rng)
        };
        // The second person of a group, so hot bidders are not hot sellers.
        let bidder = if is_hot(rng, self.config.hot_bidders_ratio) {
            last_person(id) / HOT_GROUP * HOT_GROUP + 1
        } else {
            self.next_person(id, rng)
        };
        let price = next_price(rng);
        let (channel, url) = if rng.random_range(0..2) > 0 {
            let hot = rng.random_range(0..HOT_CHANNELS.len());
            (HOT_CHANNELS[hot].to_string(), self.hot_urls[hot].clone())
        } else {
            channel_and_url(self.config.seed, rng.random_range(0..CHANNELS))
        };
        Bid {
            auction: auction as i64 + FIRST_AUCTION_ID,
            bidder: bidder as i64 + FIRST_PERSON_ID,
            price,
            channel,
            url,
            date_time,
            extra: next_extra(rng, 32, self.config.avg_bid_bytes),
        }
    }

    /// One of the active people, or one a few ids ahead (base 0).
    fn next_person(&self, id: u64, rng: &mut SmallRng) -> u64 {
        let people = last_person(id) + 1;
        let active = people.min(self.config.active_people.max(1));
        people - active + rng.random_range(0..active + PERSON_ID_LEAD)
    }

    /// One of the auctions in flight, or one a few ids ahead (base 0).
    fn next_auction(&self, id: u64, rng: &mut SmallRng) -> u64 {
        let last = last_auction(id);
        let first = last.saturating_sub(self.config.in_flight_auctions);
        first + rng.random_range(0..last - first + 1 + AUCTION_ID_LEAD)
    }

    /// On average, an auction lasts until `in_flight_auctions` more have started.
    fn auction_length_ms(&self, id: u64, rng: &mut SmallRng, date_time: i64) -> i64 {
        let ahead = self.config.in_flight_auctions * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon = self.timestamp_of(id + ahead) - date_time;
        1 + rng.random_range(0..(horizon * 2).max(1))
    }
}

/// The last person's id (base 0) at event `id`: this event's, if it makes one.
fn last_person(id: u64) -> u64 {
    let epoch = id / PROPORTION_DENOMINATOR;
    let mut offset = id % PROPORTION_DENOMINATOR;
    if offset >= PERSON_PROPORTION {
        // An auction or a bid: the last person is this epoch's last.
        offset = PERSON_PROPORTION - 1;
    }
    epoch * PERSON_PROPORTION + offset
}

/// The last auction's id (base 0) at event `id`: this event's, if it makes one.
fn last_auction(id: u64) -> u64 {
    let mut epoch = id / PROPORTION_DENOMINATOR;
    let mut offset = id % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // A person: the last auction is the previous epoch's last.
        if epoch == 0 {
            return 0;
        }
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// All but one in `ratio` picks are hot.
fn is_hot(rng: &mut SmallRng, ratio: u64) -> bool {
    rng.random_range(0..ratio.max(1)) > 0
}

/// Cents, log-uniform between 1 dollar and 1 million.
fn next_price(rng: &mut SmallRng) -> i64 {
    (10f64.powf(rng.random::<f64>() * 6.0) * 100.0).round() as i64
}

/// Lower-case words of 3 to `max_length` characters, a space in 13.
fn next_string(rng: &mut SmallRng, max_length: u64) -> String {
    let length = MIN_STRING_LENGTH + rng.random_range(0..max_length - MIN_STRING_LENGTH);
    let text: String = (0..length)
        .map(|_| {
            if rng.random_range(0..13) == 0 {
                ' '
            } else {
                char::from(b'a' + rng.random_range(0..26u8))
            }
        })
        .collect();
    text.trim().to_string()
}

/// Padding that makes an event `average` bytes on average.
fn next_extra(rng: &mut SmallRng, size: usize, average: usize) -> String {
    let Some(wanted) = average.checked_sub(size) else {
        return String::new();
    };
    let delta = (wanted as f64 * 0.2).round() as usize;
    let length = wanted - delta
        + if delta == 0 {
            0
        } else {
            rng.random_range(0..2 * delta)
        };
    // Twelve letters from each 64 random bits, not one draw a letter:
    // padding was a tenth of a generated table's time.
    let mut extra = String::with_capacity(length);
    let mut bits = 0u64;
    for i in 0..length {
        if i % 12 == 0 {
            bits = rng.random();
        }
        extra.push(char::from(b'a' + (bits % 26) as u8));
        bits /= 26;
    }
    extra
}

fn base_url(rng: &mut SmallRng) -> String {
    let mut part = || next_string(rng, 5).replace(' ', "_");
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        part(),
        part(),
        part()
    )
}

/// A cold channel's name and url, the same for a channel every time.
fn channel_and_url(seed: u64, channel: u64) -> (String, String) {
    let mut rng = SmallRng::seed_from_u64(seed ^ channel.wrapping_mul(0xa076_1d64_78bd_642f));
    let mut url = base_url(&mut rng);
    if rng.random_range(0..10) > 0 {
        let _ = write!(
            url,
            "&channel_id={}",
            (channel as i32).reverse_bits().unsigned_abs()
        );
    }
    (format!("channel-{channel}"), url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(config: NexmarkConfig, count: u64) -> Vec<Event> {
        let generator = NexmarkGenerator::new(config);
        (0..count).map(|n| generator.event(n)).collect()
    }

    #[test]
    fn proportions_ids_and_times_follow_the_reference() {
        let config = NexmarkConfig {
            base_time_ms: 1_700_000_000_000,
            events_per_second: 1000,
            ..NexmarkConfig::default()
        };
        let all = events(config, 50_000);
        let count = |t| all.iter().filter(|e| e.table() == t).count();
        assert_eq!(count(NexmarkTable::Person), 1000);
        assert_eq!(count(NexmarkTable::Auction), 3000);
        assert_eq!(count(NexmarkTable::Bid), 46_000);
        // Persons and auctions are numbered in order from their first ids.
        let people: Vec<i64> = all
            .iter()
            .filter(|e| matches!(e, Event::Person(_)))
            .map(Event::key)
            .collect();
        assert_eq!(people, (1000..2000).collect::<Vec<_>>());
        let auctions: Vec<i64> = all
            .iter()
            .filter(|e| matches!(e, Event::Auction(_)))
            .map(Event::key)
            .collect();
        assert_eq!(auctions, (1000..4000).collect::<Vec<_>>());
        // In order, a millisecond apart at 1000 events a second.
        for (n, event) in all.iter().enumerate() {
            assert_eq!(event.date_time(), 1_700_000_000_000 + n as i64);
        }
        // Half the bids go to hot auctions (the first of a hundred), and a
        // bid names an auction at most a lead ahead of the last one made.
        let bids: Vec<&Bid> = all
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) => Some(b),
                _ => None,
            })
            .collect();
        let hot = bids.iter().filter(|b| b.auction % 100 == 0).count();
        assert!(
            (0.48..0.53).contains(&(hot as f64 / bids.len() as f64)),
            "{hot}"
        );
        assert!(
            bids.iter()
                .all(|b| b.auction < 4000 + 10 && b.bidder < 2000 + 10)
        );
        // Prices are log-uniform cents between a dollar and a million dollars.
        assert!(bids.iter().all(|b| (100..=100_000_000).contains(&b.price)));
        let cheap = bids.iter().filter(|b| b.price < 10_000).count();
        assert!(
            (0.30..0.37).contains(&(cheap as f64 / bids.len() as f64)),
            "{cheap}"
        );
        // Half the channels are the hot four.
        let hot_channels = bids
            .iter()
            .filter(|b| HOT_CHANNELS.contains(&b.channel.as_str()))
            .count();
        assert!((0.48..0.52).contains(&(hot_channels as f64 / bids.len() as f64)));
        // The extra column pads a bid to 100 bytes on average.
        let average = bids.iter().map(|b| 32 + b.extra.len()).sum::<usize>() / bids.len();
        assert!((95..=105).contains(&average), "{average}");
    }

    #[test]
    fn an_event_is_the_same_whoever_makes_it_and_in_whatever_order() {
        let config = NexmarkConfig {
            seed: 42,
            ..NexmarkConfig::default()
        };
        let generator = NexmarkGenerator::new(config.clone());
        let forward: Vec<Event> = (0..500).map(|n| generator.event(n)).collect();
        let other = NexmarkGenerator::new(config);
        let backward: Vec<Event> = (0..500).rev().map(|n| other.event(n)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        let reseeded = NexmarkGenerator::new(NexmarkConfig::default());
        assert_ne!(forward[7], reseeded.event(7));
    }

    #[test]
    fn out_of_order_groups_shuffle_event_time_within_a_group() {
        let config = NexmarkConfig {
            events_per_second: 1000,
            out_of_order_group: 100,
            ..NexmarkConfig::default()
        };
        let generator = NexmarkGenerator::new(config);
        let times: Vec<i64> = (0..1000).map(|n| generator.event(n).date_time()).collect();
        assert!(times.windows(2).any(|w| w[1] < w[0]), "not out of order");
        for group in times.chunks(100) {
            let mut sorted = group.to_vec();
            sorted.sort();
            let first = sorted[0];
            assert_eq!(sorted, (first..first + 100).collect::<Vec<_>>());
        }
        // No later event is older than the watermark after a group ends.
        for n in [99, 199, 555] {
            let watermark = generator.watermark_after(n);
            assert!(times[n as usize + 1..].iter().all(|t| *t >= watermark));
        }
    }

    #[test]
    fn json_has_the_suites_field_names() {
        let generator = NexmarkGenerator::new(NexmarkConfig {
            base_time_ms: 1_764_579_600_000,
            ..NexmarkConfig::default()
        });
        let mut json = Vec::new();
        generator.event(0).write_json(&mut json);
        let person: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let keys: Vec<&str> = person
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "name",
                "emailAddress",
                "creditCard",
                "city",
                "state",
                "dateTime",
                "extra"
            ]
        );
        assert_eq!(person["dateTime"], "2025-12-01 09:00:00.000");
        json.clear();
        generator.event(1).write_json(&mut json);
        let auction: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(auction["itemName"].is_string() && auction["initialBid"].is_i64());
        json.clear();
        generator.event(4).write_json(&mut json);
        let bid: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(
            bid["url"]
                .as_str()
                .unwrap()
                .starts_with("https://www.nexmark.com/")
        );
    }
}
