-- Adds `fields` (name, value, name, value, ...) to one `hour`'s totals, kept `ttl_secs`, unless
-- this batch already did: `applied` marks that it did, for `applied_ttl_secs`, so a retry of a
-- batch that timed out after it was applied adds nothing.
if not redis.call('SET', applied, '1', 'NX', 'EX', applied_ttl_secs) then return reply{} end
for i = 1, #fields, 2 do redis.call('HINCRBY', hour, fields[i], fields[i + 1]) end
redis.call('EXPIRE', hour, ttl_secs)
return reply{}
