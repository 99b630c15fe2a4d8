//! The Lua scripts: each in its own file under `lua/`, declared once here with its keys, its
//! arguments and its reply, by name and type.
//!
//! A declaration makes a call struct (the keys and arguments) and a reply struct, so the Rust
//! side names every value. It also makes the Lua header that precedes the script's files, so
//! the Lua side names them too:
//!
//! - `S`: the status codes, from [`Status`] (`return reply{status = S.FULL}`, never a number);
//! - a local per key and argument, named as declared, numbers already converted (`ttl_ms`),
//!   flags as booleans (`if granted then`); a trailing list is a table (`receipts`); a
//!   node's settings ([`Setting`]: limits, TTLs, leases) arrive together in `ARGV[1]`, which
//!   the library reads once and keeps;
//! - `reply{...}`: the reply, in the order the Rust side reads it (fields left out are 0, false
//!   or empty; the status is required), followed by an optional list (`reply({...}, messages)`).
//!   Where every field but the first is zero and the list is empty, and the first is a number
//!   or the status, it answers that value alone ([`ScriptCall::read`]): Redis converts a table
//!   reply at about a microsecond, and most calls have nothing else to say.
//!
//! Then come the shared helpers (`prelude.lua`; the mailbox scripts also `peer.lua`, and those
//! that need them `hold.lua` and `conns.lua`), then the
//! script's own file. A new script, or a changed one, is a declaration here and its `.lua`.

use std::fmt::Write as _;
use std::sync::LazyLock;

use bytes::Bytes;
use fred::types::scripts::Script;
use fred::types::Value;

/// Helpers for every script.
const PRELUDE: &str = include_str!("lua/prelude.lua");
/// One peer's keys, its hash and reservations: what every mailbox script needs.
const PEER: &str = include_str!("lua/peer.lua");
/// Taking and reclaiming reservations, TTLs, activity (after `PEER`).
const HOLD: &str = include_str!("lua/hold.lua");
/// Connections and mailboxes: sequence, capacity, idle, eviction, budgets (after `HOLD`).
/// Each script includes only the helpers it uses: defining a Lua function costs every call.
const CONNS: &str = include_str!("lua/conns.lua");

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $code:literal as $lua:literal,)*) => {
        /// How a script ended, as its `status` field says; `S.<NAME>` in Lua.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Status {
            $($(#[$doc])* $name = $code,)*
        }

        impl Status {
            /// Every status with its Lua name.
            const ALL: &'static [(Status, &'static str)] = &[$((Status::$name, $lua),)*];
        }
    };
}

statuses! {
    /// Done.
    Ok = 0 as "OK",
    /// A newer poll of the connection took over.
    Superseded = 1 as "SUPERSEDED",
    /// The mailbox or discovery queue is full.
    Full = 2 as "FULL",
    /// The peer has as many connections as allowed, all polling.
    TooManyPeer = 3 as "TOO_MANY_PEER",
    /// Opening a connection or a discovery queue needs a project budget unit first.
    NeedBudget = 4 as "NEED_BUDGET",
    /// The script needs the keys of the connections it names in `need`; it changed nothing
    /// that depends on them.
    NeedKeys = 5 as "NEED_KEYS",
}

impl Status {
    fn from_code(code: i64) -> Option<Status> {
        Status::ALL
            .iter()
            .map(|(status, _)| *status)
            .find(|status| *status as i64 == code)
    }
}

/// How a declared value crosses into Lua and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A number (`+ 0` in the header; 0 when a reply leaves it out).
    Number,
    /// A number that is the same on every call of a node (a limit, a TTL, a lease): a call's
    /// settings go as one string in `ARGV[1]`, which the library reads once (`settings_of`,
    /// prelude.lua) rather than as an `ARGV` string and a number on every call.
    Setting,
    /// A flag (`'1'`/`'0'` in ARGV, a boolean in Lua, 1/0 in a reply).
    Flag,
    /// A string, as is.
    Text,
    /// A [`Status`]; a reply must give it, but where the reply is bare (OK, then).
    Status,
    /// Any reply value (lists only).
    Raw,
}

/// A value a script takes.
pub(crate) trait Arg: Sized {
    /// How the header reads it.
    const KIND: Kind;
    /// The value as sent.
    fn into_value(self) -> Value;
    /// Adds it to a call's arguments.
    fn put(self, argv: &mut Argv) {
        argv.values.push(self.into_value());
    }
}

/// A call's `ARGV` as it is built: its settings, if it declares any, first and as one string
/// of numbers; then the other arguments in their order.
#[derive(Debug, Default)]
pub(crate) struct Argv {
    settings: Option<String>,
    values: Vec<Value>,
}

impl Argv {
    fn finish(self) -> Vec<Value> {
        let Some(settings) = self.settings else {
            return self.values;
        };
        let mut out = Vec::with_capacity(self.values.len() + 1);
        out.push(Value::from(settings));
        out.extend(self.values);
        out
    }
}

/// A node's setting, the same on every call ([`Kind::Setting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Setting(pub(crate) u64);

impl Arg for Setting {
    const KIND: Kind = Kind::Setting;
    fn into_value(self) -> Value {
        Value::Integer(i64::try_from(self.0).unwrap_or(i64::MAX))
    }
    fn put(self, argv: &mut Argv) {
        let settings = argv.settings.get_or_insert_with(String::new);
        if !settings.is_empty() {
            settings.push(' ');
        }
        let _ = write!(settings, "{}", self.0);
    }
}

impl Arg for u64 {
    const KIND: Kind = Kind::Number;
    fn into_value(self) -> Value {
        Value::Integer(i64::try_from(self).unwrap_or(i64::MAX))
    }
}

impl Arg for i64 {
    const KIND: Kind = Kind::Number;
    fn into_value(self) -> Value {
        Value::Integer(self)
    }
}

impl Arg for u32 {
    const KIND: Kind = Kind::Number;
    fn into_value(self) -> Value {
        Value::Integer(i64::from(self))
    }
}

/// A connection id, passed as text: the scripts build key names from it, and joining a Lua
/// number into a string costs several times joining a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnId(pub(crate) u32);

impl Arg for ConnId {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::Integer(i64::from(self.0))
    }
}

impl Arg for bool {
    const KIND: Kind = Kind::Flag;
    fn into_value(self) -> Value {
        Value::from(if self { "1" } else { "0" })
    }
}

impl Arg for String {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::from(self)
    }
}

impl Arg for Bytes {
    const KIND: Kind = Kind::Text;
    fn into_value(self) -> Value {
        Value::Bytes(self)
    }
}

/// A value a script answers.
pub(crate) trait Field: Sized {
    /// How the header's `reply` writes it.
    const KIND: Kind;
    /// The value read; `None` when it is not of this type.
    fn from_value(value: Value) -> Option<Self>;
    /// What a bare reply (one value, the first field) says of this field when it is not the
    /// first: zero, empty or false; `None` for a field a reply must always give.
    fn zero() -> Option<Self>;
}

impl Field for u64 {
    const KIND: Kind = Kind::Number;
    fn from_value(value: Value) -> Option<Self> {
        value.as_u64()
    }
    fn zero() -> Option<Self> {
        Some(0)
    }
}

impl Field for i64 {
    const KIND: Kind = Kind::Number;
    fn from_value(value: Value) -> Option<Self> {
        value.as_i64()
    }
    fn zero() -> Option<Self> {
        Some(0)
    }
}

impl Field for u32 {
    const KIND: Kind = Kind::Number;
    fn from_value(value: Value) -> Option<Self> {
        value.as_u64().and_then(|v| u32::try_from(v).ok())
    }
    fn zero() -> Option<Self> {
        Some(0)
    }
}

impl Field for bool {
    const KIND: Kind = Kind::Flag;
    fn from_value(value: Value) -> Option<Self> {
        match value.as_i64()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn zero() -> Option<Self> {
        Some(false)
    }
}

impl Field for String {
    const KIND: Kind = Kind::Text;
    fn from_value(value: Value) -> Option<Self> {
        value.into_string()
    }
    fn zero() -> Option<Self> {
        Some(String::new())
    }
}

impl Field for Status {
    const KIND: Kind = Kind::Status;
    fn from_value(value: Value) -> Option<Self> {
        Status::from_code(value.as_i64()?)
    }
    fn zero() -> Option<Self> {
        Some(Status::Ok)
    }
}

impl Field for Value {
    const KIND: Kind = Kind::Raw;
    fn from_value(value: Value) -> Option<Self> {
        Some(value)
    }
    fn zero() -> Option<Self> {
        None
    }
}

/// Why a reply does not match its declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReplyError {
    /// A declared field is missing.
    #[error("without its {0}")]
    Missing(&'static str),
    /// A value is not of its declared type.
    #[error("an unreadable {0}")]
    Unreadable(&'static str),
    /// More values than declared.
    #[error("more than it declares")]
    TooLong,
}

/// Reads the next field of a reply.
fn next_field<T: Field>(
    values: &mut std::vec::IntoIter<Value>,
    name: &'static str,
) -> Result<T, ReplyError> {
    let value = values.next().ok_or(ReplyError::Missing(name))?;
    T::from_value(value).ok_or(ReplyError::Unreadable(name))
}

/// Reads a field of a bare reply: the value for the first field, zero for the others.
fn bare_field<T: Field>(first: &mut Option<Value>, name: &'static str) -> Result<T, ReplyError> {
    match first.take() {
        Some(value) => T::from_value(value).ok_or(ReplyError::Unreadable(name)),
        None => T::zero().ok_or(ReplyError::Missing(name)),
    }
}

/// Reads the rest of a reply as a list.
fn rest_fields<T: Field>(
    values: &mut std::vec::IntoIter<Value>,
    name: &'static str,
) -> Result<Vec<T>, ReplyError> {
    values
        .map(|v| T::from_value(v).ok_or(ReplyError::Unreadable(name)))
        .collect()
}

/// What a declaration says, for the header.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The script's name, for messages.
    pub(crate) name: &'static str,
    keys: &'static [&'static str],
    key_list: Option<&'static str>,
    args: &'static [(&'static str, Kind)],
    arg_list: Option<&'static str>,
    reply: &'static [(&'static str, Kind)],
    preludes: &'static [&'static str],
    body: &'static str,
}

impl Spec {
    /// The whole script, run by `EVALSHA`: the status codes, the preludes, the generated
    /// header, the script's file.
    pub(crate) fn source(&self) -> String {
        let mut out = format!(
            "-- {}: generated from its declaration in store/redis/scripts.rs.\n",
            self.name
        );
        if self.reply.iter().any(|(_, kind)| *kind == Kind::Status) {
            out.push_str(&statuses());
        }
        for prelude in self.preludes {
            out.push_str(prelude);
        }
        out.push_str(&self.header());
        out.push_str(self.body);
        out
    }

    /// The script's name in the library: its file's name without `.lua`.
    pub(crate) fn stem(&self) -> &'static str {
        self.name.strip_suffix(".lua").unwrap_or(self.name)
    }

    /// The locals of one call, read from `KEYS` and `ARGV`, and its `reply`.
    fn header(&self) -> String {
        let mut out = String::new();
        for (i, name) in (1..).zip(self.keys) {
            let _ = writeln!(out, "local {name} = KEYS[{i}]");
        }
        if let Some(list) = self.key_list {
            push_list(&mut out, list, "KEYS", self.keys.len() + 1);
        }
        // Locals, not a table: a script reads them many times and a table costs Redis time on
        // every call.
        let (settings, others): (Vec<_>, Vec<_>) = self
            .args
            .iter()
            .partition(|(_, kind)| *kind == Kind::Setting);
        if !settings.is_empty() {
            out.push_str("local settings = settings_of(ARGV[1])\n");
            for (j, (name, _)) in (1..).zip(&settings) {
                let _ = writeln!(out, "local {name} = settings[{j}]");
            }
        }
        // (`ARGV[1]` holds the settings when there are any)
        let first = if settings.is_empty() { 1 } else { 2 };
        for (i, (name, kind)) in (first..).zip(&others) {
            let _ = match kind {
                // (`+ 0`: a number sent as a string is read once; `tonumber` reads it twice)
                Kind::Number => writeln!(out, "local {name} = ARGV[{i}] + 0"),
                Kind::Flag => writeln!(out, "local {name} = ARGV[{i}] == '1'"),
                Kind::Text | Kind::Status | Kind::Raw => writeln!(out, "local {name} = ARGV[{i}]"),
                Kind::Setting => unreachable!("settings are read above"),
            };
        }
        if let Some(list) = self.arg_list {
            push_list(&mut out, list, "ARGV", first + others.len());
        }
        // `on_reply` (prelude.lua) finishes a call's writes before any reply; a call that sets
        // none has none, whatever the call before it set.
        out.push_str(
            "on_reply = nil\nlocal function reply(r, list)\n  if on_reply then on_reply() end\n",
        );
        // A bare reply, the first field alone, when every other is zero and the list empty:
        // Redis converts a table reply at about a microsecond, a number at next to nothing.
        if let Some(((first, first_kind), rest)) = self.reply.split_first() {
            let bare = match first_kind {
                Kind::Status => Some(format!("r.{first}")),
                Kind::Number | Kind::Setting => Some(format!("(r.{first} or 0)")),
                Kind::Flag | Kind::Text | Kind::Raw => None,
            };
            let zero: Option<Vec<String>> = rest
                .iter()
                .map(|(name, kind)| match kind {
                    Kind::Number | Kind::Setting => Some(format!("(r.{name} or 0) == 0")),
                    Kind::Flag => Some(format!("not r.{name}")),
                    Kind::Text => Some(format!("(r.{name} or '') == ''")),
                    Kind::Status => Some(format!("r.{name} == S.OK")),
                    Kind::Raw => None,
                })
                .collect();
            if let (Some(bare), Some(zero)) = (bare, zero) {
                let mut test = vec!["(not list or #list == 0)".to_owned()];
                test.extend(zero);
                let _ = writeln!(out, "  if {} then return {bare} end", test.join(" and "));
            }
        }
        out.push_str("  local out = {");
        let fields: Vec<String> = self
            .reply
            .iter()
            .map(|(name, kind)| match kind {
                Kind::Number | Kind::Setting => format!("(r.{name} or 0)"),
                Kind::Flag => format!("(r.{name} and 1 or 0)"),
                Kind::Text => format!("tostring(r.{name} or '')"),
                Kind::Status | Kind::Raw => format!("r.{name}"),
            })
            .collect();
        out.push_str(&fields.join(", "));
        out.push_str(
            "}\n  if list then\n    for i = 1, #list do out[#out + 1] = list[i] end\n  end\n  return out\nend\n",
        );
        out
    }

    /// Every name the header declares.
    #[cfg(test)]
    fn declared(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.keys
            .iter()
            .copied()
            .chain(self.key_list)
            .chain(self.args.iter().map(|(name, _)| *name))
            .chain(self.arg_list)
    }
}

/// `local name = {...}`: `SOURCE[first..]`, in a table sized once (filled one by one, it is
/// resized at every power of two).
fn push_list(out: &mut String, name: &str, source: &str, first: usize) {
    let _ = writeln!(out, "local {name} = {{unpack({source}, {first})}}");
}

/// `local S = {...}`: the status codes.
fn statuses() -> String {
    let codes: Vec<String> = Status::ALL
        .iter()
        .map(|(status, lua)| format!("{lua} = {}", *status as i64))
        .collect();
    format!("local S = {{{}}}\n", codes.join(", "))
}

/// Every script, each a function of the library.
const ALL: &[&Spec] = &[
    &Deliver::SPEC,
    &Begin::SPEC,
    &Take::SPEC,
    &Ack::SPEC,
    &Polling::SPEC,
    &TakeBudget::SPEC,
    &ReleaseBudget::SPEC,
    &CountBudgets::SPEC,
    &BudgetMembers::SPEC,
    &PutRevocation::SPEC,
    &ListRevocations::SPEC,
    &ReadRevocationsVersion::SPEC,
    &AddUsage::SPEC,
    &ReadUsage::SPEC,
    &AcquireLease::SPEC,
    &ReleaseLease::SPEC,
    &PutBinding::SPEC,
    &GetBinding::SPEC,
];

/// Every script as one Redis Functions library: the helpers, defined once when Redis loads it,
/// and a function per script (`FCALL`), so a call runs only its header and its own file.
#[derive(Debug)]
pub(crate) struct Library {
    /// `pulsebeam_` and the start of the SHA1 of the library's code: a library per version,
    /// so nodes of two versions (a rolling upgrade) each call their own.
    pub(crate) name: String,
    /// What `FUNCTION LOAD` takes.
    pub(crate) code: String,
}

impl Library {
    /// A script's function: the library's name, `_`, the script's file's name.
    pub(crate) fn function(&self, spec: &Spec) -> String {
        format!("{}_{}", self.name, spec.stem())
    }

    /// Whether `err` says Redis does not have the function called (not loaded yet, or gone).
    pub(crate) fn missing(err: &fred::error::Error) -> bool {
        err.details().contains("Function not found")
    }

    /// Whether `err` says Redis cannot run a library at all: no such command (before 7.0), or
    /// a user not allowed `FUNCTION LOAD` or `FCALL`.
    pub(crate) fn refused(err: &fred::error::Error) -> bool {
        let details = err.details();
        details.contains("unknown command") || details.starts_with("NOPERM")
    }

    fn build() -> Library {
        let body = helpers();
        let version = fred::util::sha1_hash(&body_with_functions(&body, "pulsebeam"));
        let name = format!("pulsebeam_{}", &version[..16]);
        let code = format!(
            "#!lua name={name}\n-- Generated from the declarations in store/redis/scripts.rs.\n{}",
            body_with_functions(&body, &name)
        );
        Library { name, code }
    }
}

/// `helpers` followed by a `redis.register_function` per script, named `prefix_<script>`,
/// and `prefix_batch`, which runs several calls in one `FCALL` (`lua/batch.lua`). A call on
/// its own reads the clock afresh whatever a batch before it left (`now_ms`, prelude.lua).
fn body_with_functions(helpers: &str, prefix: &str) -> String {
    let mut out = helpers.to_owned();
    out.push_str("local calls = {}\n");
    for spec in ALL {
        let stem = spec.stem();
        let _ = write!(
            out,
            "calls['{stem}'] = function(KEYS, ARGV)\n{}{}\nend\nredis.register_function('{prefix}_{stem}', function(KEYS, ARGV)\n  in_batch, batch_now = false, nil\n  return calls['{stem}'](KEYS, ARGV)\nend)\n",
            spec.header(),
            spec.body
        );
    }
    out.push_str(BATCH);
    let _ = writeln!(
        out,
        "redis.register_function('{prefix}_{BATCH_STEM}', batch)"
    );
    out
}

/// The function that runs several calls in one `FCALL`.
const BATCH: &str = include_str!("lua/batch.lua");

/// Its name in the library, after the library's name and `_`.
const BATCH_STEM: &str = "batch";

/// The library's function that runs several calls in one `FCALL` (`lua/batch.lua`).
pub(crate) fn batch_function() -> &'static str {
    static FUNCTION: LazyLock<String> =
        LazyLock::new(|| format!("{}_{BATCH_STEM}", library().name));
    &FUNCTION
}

/// The library's code under another name, its functions `prefix_<script>` (for a test to load
/// a changed copy beside it).
#[cfg(test)]
pub(crate) fn library_code_named(prefix: &str) -> String {
    format!(
        "#!lua name={prefix}\n{}",
        body_with_functions(&helpers(), prefix)
    )
}

/// The status codes and every helper, as the library defines them once.
fn helpers() -> String {
    let mut body = statuses();
    for helpers in [PRELUDE, PEER, HOLD, CONNS] {
        body.push_str(helpers);
    }
    body
}

/// The library, built once per process.
pub(crate) fn library() -> &'static Library {
    static LIBRARY: LazyLock<Library> = LazyLock::new(Library::build);
    &LIBRARY
}

/// A call of one script: its keys and arguments, and how its reply reads.
pub(crate) trait ScriptCall: Sized {
    /// The reply, by name.
    type Reply;
    /// The declaration.
    const SPEC: Spec;
    /// The script on its own, for `EVALSHA`, compiled (its SHA1 computed) once per process.
    fn script() -> &'static Script;
    /// The script's function in the [`library`].
    fn function() -> &'static str;
    /// The keys and the arguments, in declaration order.
    fn into_parts(self) -> (Vec<String>, Vec<Value>);
    /// Reads a reply.
    ///
    /// # Errors
    ///
    /// [`ReplyError`] when the reply does not match the declaration.
    fn parse(values: Vec<Value>) -> Result<Self::Reply, ReplyError>;
    /// Reads a bare reply: one value, the first field, every other field zero and no list.
    ///
    /// # Errors
    ///
    /// [`ReplyError`] when the value is not the first field's, or the reply has no fields.
    fn parse_bare(value: Value) -> Result<Self::Reply, ReplyError>;
    /// Reads what Redis answered: an array as declared, or a bare value, which a script
    /// answers when every field but the first is zero and it hands out nothing (`reply` in the
    /// header), sparing Redis a table to convert (about a microsecond of a `deliver`).
    ///
    /// # Errors
    ///
    /// [`ReplyError`] when the reply does not match the declaration.
    fn read(reply: Value) -> Result<Self::Reply, ReplyError> {
        match reply {
            Value::Array(values) => Self::parse(values),
            bare => Self::parse_bare(bare),
        }
    }
}

macro_rules! name_of {
    () => {
        None
    };
    ($name:ident) => {
        Some(stringify!($name))
    };
}

/// Declares a script: `Call -> Reply = "file.lua" [preludes]`, then its `keys`, `args` and
/// `reply` by name (a `+ name` after the braces is a trailing list).
macro_rules! script {
    (
        $(#[$doc:meta])*
        $call:ident -> $reply:ident = $file:literal [$($prelude:ident),*];
        keys { $($key:ident),* $(,)? } $(+ $key_list:ident)?;
        args { $($arg:ident: $arg_ty:ty),* $(,)? } $(+ $arg_list:ident: $arg_list_ty:ty)?;
        reply { $($field:ident: $field_ty:ty),* $(,)? } $(+ $reply_list:ident: $reply_list_ty:ty)?;
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub(crate) struct $call {
            $(pub(crate) $key: String,)*
            $(pub(crate) $key_list: Vec<String>,)?
            $(pub(crate) $arg: $arg_ty,)*
            $(pub(crate) $arg_list: Vec<$arg_list_ty>,)?
        }

        #[doc = concat!("What `", $file, "` answers.")]
        #[derive(Debug)]
        pub(crate) struct $reply {
            $(pub(crate) $field: $field_ty,)*
            $(pub(crate) $reply_list: Vec<$reply_list_ty>,)?
        }

        impl ScriptCall for $call {
            type Reply = $reply;

            const SPEC: Spec = Spec {
                name: $file,
                keys: &[$(stringify!($key)),*],
                key_list: name_of!($($key_list)?),
                args: &[$((stringify!($arg), <$arg_ty as Arg>::KIND)),*],
                arg_list: name_of!($($arg_list)?),
                reply: &[$((stringify!($field), <$field_ty as Field>::KIND)),*],
                preludes: &[$($prelude),*],
                body: include_str!(concat!("lua/", $file)),
            };

            fn script() -> &'static Script {
                static SCRIPT: LazyLock<Script> =
                    LazyLock::new(|| Script::from_lua(<$call as ScriptCall>::SPEC.source()));
                &SCRIPT
            }

            fn function() -> &'static str {
                static FUNCTION: LazyLock<String> =
                    LazyLock::new(|| library().function(&<$call as ScriptCall>::SPEC));
                &FUNCTION
            }

            #[allow(unused_mut)]
            fn into_parts(self) -> (Vec<String>, Vec<Value>) {
                let mut keys: Vec<String> = vec![$(self.$key),*];
                $(keys.extend(self.$key_list);)?
                let mut argv = Argv::default();
                $(Arg::put(self.$arg, &mut argv);)*
                let mut args = argv.finish();
                $(args.extend(self.$arg_list.into_iter().map(Arg::into_value));)?
                (keys, args)
            }

            fn parse(values: Vec<Value>) -> Result<$reply, ReplyError> {
                let mut values = values.into_iter();
                let reply = $reply {
                    $($field: next_field(&mut values, stringify!($field))?,)*
                    $($reply_list: rest_fields(&mut values, stringify!($reply_list))?,)?
                };
                if values.next().is_some() {
                    return Err(ReplyError::TooLong);
                }
                Ok(reply)
            }

            #[allow(unused_mut)]
            fn parse_bare(value: Value) -> Result<$reply, ReplyError> {
                let mut first = Some(value);
                let reply = $reply {
                    $($field: bare_field(&mut first, stringify!($field))?,)*
                    $($reply_list: Vec::new(),)?
                };
                if first.is_some() {
                    return Err(ReplyError::TooLong);
                }
                Ok(reply)
            }
        }
    };
}

script! {
    /// Stores one message for a connection, or for the peer's discovery queue (`conn` 0).
    Deliver -> Delivered = "deliver.lua" [PRELUDE, PEER, HOLD, CONNS];
    keys { h, conns, d } + boxes;
    args {
        base: String, conn: ConnId, envelope: Bytes, capacity: Setting, ttl_ms: Setting,
        idle_ms: Setting, max_per_peer: Setting, keep_ms: Setting, granted: bool,
        channel_prefix: String, sharded: bool, ack_lease_ms: Setting,
    };
    reply {
        status: Status, budget_due: bool, budget_member: String, evicted: u64, expired: u64,
        evicted_conn: String, need: String,
    };
}

script! {
    /// Registers a poll and hands out what is waiting, with `takeover` what older polls handed
    /// out and nobody acknowledged first; acknowledges `ack_receipt` (0: none) before.
    Begin -> Begun = "begin.lua" [PRELUDE, PEER, HOLD, CONNS];
    keys { h, conns, d } + boxes;
    args {
        base: String, conn: ConnId, node: String, wait_ms: u64, max: u64, ack_lease_ms: Setting,
        ttl_ms: Setting, idle_ms: Setting, max_per_peer: Setting, keep_ms: u64, granted: bool,
        channel_prefix: String, sharded: bool, budget_span_ms: u64, grace_ms: Setting,
        takeover: bool, ack_receipt: u64,
        batch_ms: u64,
    };
    // (the generation first: a poll registered with nothing to hand out answers it bare)
    reply {
        generation: i64, status: Status, budget_due: bool, evicted: u64, expired: u64,
        evicted_conn: String, lease_left_ms: u64, need: String, acknowledged: u64,
    } + messages: Value;
}

script! {
    /// Hands out what waits for a poll in flight, or ends it.
    Take -> Taken = "take.lua" [PRELUDE, PEER, HOLD];
    keys { h, conns, d } + boxes;
    args {
        base: String, conn: ConnId, generation: i64, max: u64, ack_lease_ms: Setting,
        ttl_ms: Setting, last: bool, keep_ms: Setting,
    };
    reply { status: Status, expired: u64, lease_left_ms: u64 } + messages: Value;
}

script! {
    /// Deletes what polls of a connection handed out.
    Ack -> Acked = "ack.lua" [PRELUDE, PEER];
    keys { h, conns, d } + boxes;
    args { base: String, conn: ConnId } + receipts: u64;
    reply { acknowledged: u64 };
}

script! {
    /// Which connections of a peer have a poll in flight.
    Polling -> InFlight = "polling.lua" [PRELUDE, PEER];
    keys { h, conns, d } + boxes;
    args { base: String } + asked: u32;
    reply {} + conns: u32;
}

script! {
    /// Takes or refreshes a unit of a project budget.
    TakeBudget -> BudgetTaken = "budget.lua" [PRELUDE];
    keys { budget, other };
    args { refresh: bool, member: String, span_ms: u64, max: u64 };
    reply { granted: bool };
}

script! {
    /// Gives back the units a member holds in a project's budgets.
    ReleaseBudget -> BudgetReleased = "budget_release.lua" [PRELUDE];
    keys { polled, mail };
    args { member: String };
    reply {};
}

script! {
    /// The units held in a project's budgets.
    CountBudgets -> BudgetCount = "budget_count.lua" [PRELUDE];
    keys { polled, mail };
    args {};
    reply { count: u64 };
}

script! {
    /// The live members of a project's polled budget.
    BudgetMembers -> Members = "budget_members.lua" [PRELUDE];
    keys { polled };
    args {};
    reply {} + members: String;
}

script! {
    /// Puts a revocation in force unless a longer one of its target is.
    PutRevocation -> RevocationInForce = "revocation_put.lua" [PRELUDE];
    keys { all, version };
    args { target: String, stored: String, until_secs: u64 };
    reply { in_force: String };
}

script! {
    /// The revocations holding after a time.
    ListRevocations -> RevocationList = "revocation_list.lua" [PRELUDE];
    keys { all };
    args { now_secs: u64 };
    reply {} + stored: String;
}

script! {
    /// The revocations' epoch (`proposed` when there was none) and change counter, read at once.
    ReadRevocationsVersion -> RevocationsCounter = "revocation_version.lua" [PRELUDE];
    keys { version, epoch };
    args { proposed: String };
    reply { epoch: String, version: u64 };
}

script! {
    /// Adds to one hour's usage totals of a project, once per batch.
    AddUsage -> UsageAdded = "usage_add.lua" [PRELUDE];
    keys { hour, applied };
    args { ttl_secs: u64, applied_ttl_secs: u64 } + fields: String;
    reply {};
}

script! {
    /// Reads hours of a project's usage totals.
    ReadUsage -> UsageRead = "usage_read.lua" [PRELUDE];
    keys {} + hours;
    args {};
    reply {} + hours: Value;
}

script! {
    /// Takes or renews a lease.
    AcquireLease -> LeaseAcquired = "lease_acquire.lua" [PRELUDE];
    keys { lease };
    args { holder: String, ms: u64 };
    reply { held: bool, renewed: bool };
}

script! {
    /// Gives a lease up.
    ReleaseLease -> LeaseReleased = "lease_release.lua" [PRELUDE];
    keys { lease };
    args { holder: String };
    reply { released: bool };
}

script! {
    /// Binds a peer at a client address to a credential for a time (see `store::bindings`).
    PutBinding -> BindingPut = "binding_put.lua" [PRELUDE];
    keys { binding };
    args { credential: String, keep_ms: u64 };
    reply {};
}

script! {
    /// The credential bound to a peer at a client address.
    GetBinding -> BindingGot = "binding_get.lua" [PRELUDE];
    keys { binding };
    args {};
    reply { credential: String };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every declaration.
    fn all() -> Vec<&'static Spec> {
        ALL.to_vec()
    }

    /// The Lua without comments.
    fn code(lua: &str) -> String {
        lua.lines()
            .map(|line| line.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The identifiers in `lua`, in order.
    fn identifiers(lua: &str) -> Vec<&str> {
        lua.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// The names `local` statements (and `local function`s) in `lua` define.
    fn locals(lua: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in code(lua).lines() {
            let Some(rest) = line.trim_start().strip_prefix("local ") else {
                continue;
            };
            match rest.strip_prefix("function ") {
                Some(f) => out.extend(identifiers(f).first().map(|n| (*n).to_owned())),
                None => out.extend(
                    rest.split('=')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(|n| n.trim().to_owned()),
                ),
            }
        }
        out
    }

    /// The status names `S.NAME` used in `lua`.
    fn statuses_used(lua: &str) -> Vec<String> {
        let code = code(lua);
        let mut out = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("S.") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + 2..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            out.push(
                identifiers(rest)
                    .first()
                    .map(|n| (*n).to_owned())
                    .unwrap_or_default(),
            );
        }
        out
    }

    const LUA_KEYWORDS: &[&str] = &[
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if", "in",
        "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];

    #[test]
    fn scripts_use_what_they_declare_and_never_shadow_it() {
        for spec in all() {
            let lua = code(&(spec.preludes.concat() + spec.body));
            let used = identifiers(&lua);
            let defined = locals(&lua);
            for declared in spec.declared() {
                assert!(
                    used.contains(&declared),
                    "{}: {declared} is never used",
                    spec.name
                );
                assert!(
                    !defined.iter().any(|d| d == declared),
                    "{}: a local shadows {declared}",
                    spec.name
                );
                assert!(
                    !LUA_KEYWORDS.contains(&declared),
                    "{}: {declared}",
                    spec.name
                );
            }
            for (field, _) in spec.reply {
                assert!(!LUA_KEYWORDS.contains(field), "{}: {field}", spec.name);
            }
            let statuses = statuses_used(&lua);
            let has_status = spec.reply.iter().any(|(_, kind)| *kind == Kind::Status);
            assert_eq!(!statuses.is_empty(), has_status, "{}", spec.name);
            for status in statuses {
                assert!(
                    Status::ALL.iter().any(|(_, lua)| *lua == status),
                    "{}: S.{status}",
                    spec.name
                );
            }
        }
    }

    /// The names `local function` defines in `lua`.
    fn functions(lua: &str) -> Vec<String> {
        code(lua)
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("local function "))
            .filter_map(|rest| identifiers(rest).first().map(|n| (*n).to_owned()))
            .collect()
    }

    /// Whether `lua` calls `name` (`name(`, not as a part of a longer name or a field).
    fn calls(lua: &str, name: &str) -> bool {
        lua.match_indices(name).any(|(at, _)| {
            let before = lua[..at].chars().next_back();
            let after = &lua[at + name.len()..];
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                && (after.starts_with('(') || after.starts_with('{'))
        })
    }

    #[test]
    fn scripts_call_only_helpers_their_preludes_define() {
        let helpers: Vec<String> = [PRELUDE, PEER, HOLD, CONNS]
            .iter()
            .flat_map(|lua| functions(lua))
            .collect();
        assert!(helpers.iter().any(|h| h == "expire_head"), "{helpers:?}");
        for spec in all() {
            let defined = functions(&spec.preludes.concat());
            let lua = code(&(spec.preludes.concat() + spec.body));
            for helper in &helpers {
                assert!(
                    !calls(&lua, helper) || defined.contains(helper),
                    "{}: calls {helper}, which its preludes do not define",
                    spec.name
                );
            }
        }
        // What the check would catch: ack without the helpers of deliver.
        assert!(calls("local n = box_full(c, 1, 0, 2)", "box_full"));
        assert!(!calls("x.box_full(1)", "box_full") && !calls("my_box_full(1)", "box_full"));
    }

    #[test]
    fn scripts_answer_only_through_reply() {
        for spec in all() {
            let mut rest = spec.body;
            let mut returns = 0;
            while let Some(at) = rest.find("return") {
                rest = &rest[at + "return".len()..];
                returns += 1;
                assert!(
                    rest.starts_with(" reply{") || rest.starts_with(" reply("),
                    "{}: a return that is not reply{{...}}: return{}",
                    spec.name,
                    rest.lines().next().unwrap_or_default()
                );
            }
            assert!(returns > 0, "{}", spec.name);
        }
    }

    #[test]
    fn the_header_names_statuses_keys_arguments_and_the_reply() {
        let header = Ack::SPEC.header();
        assert_eq!(
            header,
            "local h = KEYS[1]\n\
             local conns = KEYS[2]\n\
             local d = KEYS[3]\n\
             local boxes = {unpack(KEYS, 4)}\n\
             local base = ARGV[1]\n\
             local conn = ARGV[2]\n\
             local receipts = {unpack(ARGV, 3)}\n\
             on_reply = nil\n\
             local function reply(r, list)\n  if on_reply then on_reply() end\n  \
             if (not list or #list == 0) then return (r.acknowledged or 0) end\n  \
             local out = {(r.acknowledged or 0)}\n  \
             if list then\n    for i = 1, #list do out[#out + 1] = list[i] end\n  end\n  \
             return out\nend\n"
        );
        assert_eq!(
            statuses(),
            "local S = {OK = 0, SUPERSEDED = 1, FULL = 2, TOO_MANY_PEER = 3, NEED_BUDGET = 4, NEED_KEYS = 5}\n"
        );
        assert!(Deliver::SPEC.source().contains(&statuses()));
        assert!(!ReadUsage::SPEC.source().contains("local S"));
        let deliver = Deliver::SPEC.header();
        // Settings come first, as one string the library reads once; the others after it.
        assert!(
            deliver.starts_with(
                "local h = KEYS[1]\nlocal conns = KEYS[2]\nlocal d = KEYS[3]\nlocal boxes = {unpack(KEYS, 4)}\n\
                 local settings = settings_of(ARGV[1])\nlocal capacity = settings[1]\n\
                 local ttl_ms = settings[2]\nlocal idle_ms = settings[3]\n\
                 local max_per_peer = settings[4]\nlocal keep_ms = settings[5]\n\
                 local ack_lease_ms = settings[6]\nlocal base = ARGV[2]\n"
            ),
            "{deliver}"
        );
        assert!(
            deliver.contains("local granted = ARGV[5] == '1'\n"),
            "{deliver}"
        );
        assert!(deliver.contains("local envelope = ARGV[4]\n"), "{deliver}");
        assert!(
            deliver.contains("{r.status, (r.budget_due and 1 or 0), tostring(r.budget_member or ''), (r.evicted or 0), (r.expired or 0), tostring(r.evicted_conn or ''), tostring(r.need or '')}"),
            "{deliver}"
        );
        let read = ReadUsage::SPEC.header();
        assert!(read.contains("local hours = {unpack(KEYS, 1)}\n"), "{read}");
    }

    #[test]
    fn a_script_on_its_own_has_its_helpers_before_its_header() {
        let source = Deliver::SPEC.source();
        let at = |what: &str| source.find(what).unwrap_or_else(|| panic!("{what}"));
        assert!(at("local S = ") < at("local function now_ms()"));
        assert!(at("local function enter(") < at("local function expire_head("));
        assert!(at("local function expire_head(") < at("local h = KEYS[1]"));
        assert!(at("local h = KEYS[1]") < at("\nenter(h, conns, d, boxes, base)"));
        let budget = TakeBudget::SPEC.source();
        assert!(!budget.contains("local function enter("), "{budget}");
    }

    #[test]
    fn the_library_defines_its_helpers_once_and_a_function_per_script() {
        let library = library();
        assert!(library.name.starts_with("pulsebeam_"));
        assert_eq!(library.name.len(), "pulsebeam_".len() + 16);
        assert!(library
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(library
            .code
            .starts_with(&format!("#!lua name={}\n", library.name)));
        assert_eq!(library.code.matches("local function enter(").count(), 1);
        assert_eq!(library.code.matches("local S = ").count(), 1);
        for spec in all() {
            let function = library.function(spec);
            assert_eq!(
                library
                    .code
                    .matches(&format!("redis.register_function('{function}', "))
                    .count(),
                1,
                "{function}"
            );
        }
        assert_eq!(Deliver::function(), library.function(&Deliver::SPEC));
        assert!(Deliver::function().ends_with("_deliver"));
        assert_eq!(
            library.code.matches("redis.register_function(").count(),
            all().len() + 1
        );
        assert_eq!(
            library
                .code
                .matches(&format!(
                    "redis.register_function('{}', batch)",
                    batch_function()
                ))
                .count(),
            1
        );
        assert!(all().iter().all(|spec| spec.stem() != BATCH_STEM));
    }

    #[test]
    fn status_codes_are_distinct_and_read_back() {
        for (i, (status, lua)) in Status::ALL.iter().enumerate() {
            assert_eq!(Status::from_code(*status as i64), Some(*status));
            assert!(Status::ALL
                .iter()
                .skip(i + 1)
                .all(|(other, name)| *other as i64 != *status as i64 && name != lua));
        }
        assert_eq!(Status::from_code(99), None);
    }

    #[test]
    fn calls_send_keys_and_arguments_in_declaration_order() {
        let (keys, args) = Begin {
            h: "pb:{p:g:a}:h".into(),
            conns: "pb:{p:g:a}:conns".into(),
            d: "pb:{p:g:a}:d".into(),
            boxes: vec!["pb:{p:g:a}:m:100".into()],
            base: "pb:{p:g:a}:".into(),
            conn: ConnId(100),
            node: "n1".into(),
            wait_ms: 30_000,
            max: 64,
            ack_lease_ms: Setting(5_000),
            ttl_ms: Setting(1),
            idle_ms: Setting(2),
            max_per_peer: Setting(3),
            keep_ms: 4,
            granted: true,
            channel_prefix: "pb:node:".into(),
            sharded: false,
            budget_span_ms: 5,
            grace_ms: Setting(6),
            takeover: false,
            ack_receipt: 7,
            batch_ms: 8,
        }
        .into_parts();
        assert_eq!(
            keys,
            [
                "pb:{p:g:a}:h",
                "pb:{p:g:a}:conns",
                "pb:{p:g:a}:d",
                "pb:{p:g:a}:m:100"
            ]
        );
        let args: Vec<String> = args.into_iter().filter_map(Value::into_string).collect();
        assert_eq!(
            args,
            [
                // The settings first, as one string, in their order.
                "5000 1 2 3 6",
                "pb:{p:g:a}:",
                "100",
                "n1",
                "30000",
                "64",
                "4",
                "1",
                "pb:node:",
                "0",
                "5",
                "0",
                "7",
                "8"
            ]
        );
        let (keys, args) = ReadUsage {
            hours: vec!["a".into(), "b".into()],
        }
        .into_parts();
        assert_eq!((keys.len(), args.len()), (2, 0));
    }

    #[test]
    fn replies_are_read_by_name_and_checked() {
        let taken = Take::parse(vec![
            Value::Integer(0),
            Value::Integer(3),
            Value::Integer(0),
            Value::from("m1"),
            Value::from("m2"),
        ])
        .unwrap();
        assert_eq!(taken.status, Status::Ok);
        assert_eq!(taken.expired, 3);
        assert_eq!(taken.messages, [Value::from("m1"), Value::from("m2")]);

        let delivered = Deliver::parse(vec![
            Value::Integer(4),
            Value::Integer(0),
            Value::Integer(100),
            Value::Integer(0),
            Value::Integer(2),
            Value::from(""),
            Value::from(""),
        ])
        .unwrap();
        assert_eq!(delivered.status, Status::NeedBudget);
        assert!(!delivered.budget_due);
        assert_eq!(delivered.budget_member, "100");

        assert_eq!(
            Take::parse(Vec::new()).unwrap_err(),
            ReplyError::Missing("status")
        );
        assert_eq!(
            Take::parse(vec![Value::Integer(9), Value::Integer(0)]).unwrap_err(),
            ReplyError::Unreadable("status")
        );
        assert_eq!(
            Ack::parse(vec![Value::Integer(1), Value::Integer(2)]).unwrap_err(),
            ReplyError::TooLong
        );
        assert_eq!(
            TakeBudget::parse(vec![Value::Integer(2)]).unwrap_err(),
            ReplyError::Unreadable("granted")
        );
        assert_eq!(
            Polling::parse(vec![Value::from("100"), Value::from("x")]).unwrap_err(),
            ReplyError::Unreadable("conns")
        );
    }

    #[test]
    fn a_bare_reply_is_its_first_field_and_zeros() {
        let delivered = Deliver::read(Value::Integer(0)).unwrap();
        assert_eq!(delivered.status, Status::Ok);
        assert!(!delivered.budget_due);
        assert_eq!(
            (
                delivered.budget_member.as_str(),
                delivered.evicted,
                delivered.expired
            ),
            ("", 0, 0)
        );
        let taken = Take::read(Value::Integer(1)).unwrap();
        assert_eq!(taken.status, Status::Superseded);
        assert!(taken.messages.is_empty());
        assert_eq!(Ack::read(Value::Integer(3)).unwrap().acknowledged, 3);
        // A poll registered with nothing to hand out: its generation, OK.
        let begun = Begin::read(Value::Integer(7)).unwrap();
        assert_eq!((begun.generation, begun.status), (7, Status::Ok));
        assert!(begun.messages.is_empty());
        // An array is read as declared, whatever its length.
        assert_eq!(
            Deliver::read(Value::Array(vec![Value::Integer(0)])).unwrap_err(),
            ReplyError::Missing("budget_due")
        );
        // A bare value must be the first field's; a reply without fields takes none.
        assert_eq!(
            Deliver::read(Value::Null).unwrap_err(),
            ReplyError::Unreadable("status")
        );
        assert_eq!(
            Deliver::read(Value::Integer(9)).unwrap_err(),
            ReplyError::Unreadable("status")
        );
        assert_eq!(
            Polling::read(Value::Integer(1)).unwrap_err(),
            ReplyError::TooLong
        );
    }

    #[test]
    fn the_reply_is_bare_only_where_it_reads_back() {
        let deliver = Deliver::SPEC.header();
        assert!(
            deliver.contains(
                "  if (not list or #list == 0) and not r.budget_due and (r.budget_member or '') == '' \
                 and (r.evicted or 0) == 0 and (r.expired or 0) == 0 and (r.evicted_conn or '') == '' \
                 and (r.need or '') == '' then return r.status end\n"
            ),
            "{deliver}"
        );
        // A status after the first field is zero when OK.
        let begin = Begin::SPEC.header();
        assert!(
            begin.contains(
                "  if (not list or #list == 0) and r.status == S.OK and not r.budget_due"
            ),
            "{begin}"
        );
        // A first field that is a flag has none: Lua's false would reach Redis as nil.
        let budget = TakeBudget::SPEC.header();
        assert!(!budget.contains("then return"), "{budget}");
        let polling = Polling::SPEC.header();
        assert!(!polling.contains("then return"), "{polling}");
    }
}
