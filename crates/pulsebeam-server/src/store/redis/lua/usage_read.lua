-- The totals of each hour in `hours` (one project's), as name/value lists.
local out = {}
for i, key in ipairs(hours) do out[i] = redis.call('HGETALL', key) end
return reply({}, out)
