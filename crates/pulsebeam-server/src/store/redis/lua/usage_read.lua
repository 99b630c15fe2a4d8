-- The totals of each hour in KEY.hours (one project's), as name/value lists.
local out = {}
for i, key in ipairs(KEY.hours) do out[i] = redis.call('HGETALL', key) end
return reply({}, out)
