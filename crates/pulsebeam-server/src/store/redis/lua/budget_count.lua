-- The units held in a project's two budgets, without expired entries.
local now = now_ms()
return reply{count = redis.call('ZCOUNT', KEY.polled, now, '+inf') + redis.call('ZCOUNT', KEY.mail, now, '+inf')}
