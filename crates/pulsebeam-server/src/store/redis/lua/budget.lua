-- Takes a unit of the project budget KEY.budget for ARG.member (moving it out of the project's
-- other budget, KEY.other), or with ARG.refresh extends the unit it holds. Entries expire by
-- score, so a forgotten connection gives its unit back by itself.
local now = now_ms()
local span = ARG.span_ms
redis.call('ZREMRANGEBYSCORE', KEY.budget, '-inf', now)
if not ARG.refresh and not redis.call('ZSCORE', KEY.budget, ARG.member)
    and redis.call('ZCARD', KEY.budget) >= ARG.max then
  return reply{granted = false}
end
redis.call('ZADD', KEY.budget, now + 2 * span + 1000, ARG.member)
if not ARG.refresh then redis.call('ZREM', KEY.other, ARG.member) end
redis.call('PEXPIRE', KEY.budget, 2 * span + 1000)
return reply{granted = true}
