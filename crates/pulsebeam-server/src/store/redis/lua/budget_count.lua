-- The units held in a project's two budgets, `polled` and `mail`, without expired entries.
local now = now_ms()
return reply{count = redis.call('ZCOUNT', polled, now, '+inf') + redis.call('ZCOUNT', mail, now, '+inf')}
