-- Adds ARG.fields (name, value, name, value, ...) to one hour's totals, kept ARG.ttl_secs.
local fields = ARG.fields
for i = 1, #fields, 2 do redis.call('HINCRBY', KEY.hour, fields[i], fields[i + 1]) end
redis.call('EXPIRE', KEY.hour, ARG.ttl_secs)
return reply{}
