-- Takes a unit of the project budget `budget` for `member` (moving it out of the project's
-- `other` budget), or with `refresh` extends the unit it holds. Entries expire by score, so a
-- forgotten connection gives its unit back by itself.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', budget, '-inf', now)
if not refresh and not redis.call('ZSCORE', budget, member)
    and redis.call('ZCARD', budget) >= max then
  return reply{granted = false}
end
redis.call('ZADD', budget, now + 2 * span_ms + 1000, member)
if not refresh then redis.call('ZREM', other, member) end
redis.call('PEXPIRE', budget, 2 * span_ms + 1000)
return reply{granted = true}
