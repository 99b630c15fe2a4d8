-- Takes `lease` for `holder`, or renews it if `holder` holds it, for `ms`.
local current = redis.call('GET', lease)
if current == false then
  redis.call('SET', lease, holder, 'PX', ms)
  return reply{held = true}
end
if current == holder then
  redis.call('PEXPIRE', lease, ms)
  return reply{held = true}
end
return reply{held = false}
