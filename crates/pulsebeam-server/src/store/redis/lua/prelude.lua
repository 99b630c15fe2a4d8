-- Helpers for every script. The status codes S come before this file, and each script's own
-- header after the helpers, both generated from the declarations in scripts.rs: a local per
-- declared key and argument (numbers as numbers, flags as booleans), and reply{...}, which
-- builds the reply in the order the Rust side reads it.

-- Run by reply{...} before it answers (set per call: `enter` in peer.lua, or the script).
local on_reply = nil

-- Redis server time in milliseconds: every node agrees on it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A stored number, 0 when absent.
local function num(v) return tonumber(v or '0') or 0 end

local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end
