-- Adds `fields` (name, value, name, value, ...) to one `hour`'s totals, kept `ttl_secs`.
for i = 1, #fields, 2 do redis.call('HINCRBY', hour, fields[i], fields[i + 1]) end
redis.call('EXPIRE', hour, ttl_secs)
return reply{}
