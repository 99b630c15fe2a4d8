-- Helpers for every script. The status codes S come before this file, and each script's own
-- header after the helpers, both generated from the declarations in scripts.rs: a local per
-- declared key and argument (numbers as numbers, flags as booleans), and reply{...}, which
-- builds the reply in the order the Rust side reads it.

-- Whether deliver and begin take their fast path where it applies (the general path does
-- the same there; a test turns this off to compare the two, store/redis/fast_path_tests.rs).
local FAST_PATH = true

-- Run by reply{...} before it answers (set per call: `enter` in peer.lua, or the script).
local on_reply = nil

-- Redis server time in milliseconds: every node agrees on it. The calls of one batch
-- (batch.lua) read it once, at the first call that needs it: they run within a few
-- milliseconds of one another, and Redis keeps time still for a script's keys anyway.
local in_batch, batch_now = false, nil
local function now_ms()
  if batch_now then return batch_now end
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  if in_batch then batch_now = now end
  return now
end

-- An integer as Redis takes it. A number passed to redis.call, or joined into a string, is
-- printed as a float (a fifth to a half of a microsecond each); '%d' costs a third of that.
-- (`string` is looked up at call time: a library's loading code may not read it.)
local function fmt(f, ...) return string.format(f, ...) end
local function int(n) return string.format('%d', n) end

-- A stored number (always an integer a script wrote), 0 when absent. Arithmetic reads a
-- string as a number once; `tonumber` (Lua 5.1) reads it twice, each time as a float, at
-- twice the cost: a call reads a few dozen numbers. A value that is not a number (a hash
-- edited by hand) fails the call with Lua's "attempt to perform arithmetic on a string
-- value", never taken for another number.
local function num(v)
  if v then return v + 0 end
  return 0
end

local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end

-- A call's settings (store/redis/scripts.rs, `Kind::Setting`): the numbers of `s`, read once
-- per library and kept, since a node sends the same few strings on every call. At most 64
-- are kept (a node sends one or two per script; a test, more).
local settings_read, settings_kept = {}, 0
local function settings_of(s)
  local v = settings_read[s]
  if v then return v end
  v = words(s)
  for i = 1, #v do v[i] = v[i] + 0 end
  if settings_kept >= 64 then settings_read, settings_kept = {}, 0 end
  settings_read[s] = v
  settings_kept = settings_kept + 1
  return v
end
