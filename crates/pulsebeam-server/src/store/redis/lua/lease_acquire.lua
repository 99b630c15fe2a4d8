-- Takes the lease KEY.lease for ARG.holder, or renews it if ARG.holder holds it, for ARG.ms.
local holder = redis.call('GET', KEY.lease)
if holder == false then
  redis.call('SET', KEY.lease, ARG.holder, 'PX', ARG.ms)
  return reply{held = true}
end
if holder == ARG.holder then
  redis.call('PEXPIRE', KEY.lease, ARG.ms)
  return reply{held = true}
end
return reply{held = false}
