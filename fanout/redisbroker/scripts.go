package redisbroker

import "github.com/redis/go-redis/v9"

// Pub/sub message layout, built by the scripts and parsed by parse:
//
//	p<offset>:<unix nanos>:<len(epoch)>:<epoch><len(topic)>:<topic><payload>
//	j<len(topic)>:<topic><len(id)>:<id><info>     (join)
//	l<len(topic)>:<topic><len(id)>:<id><info>     (leave)

// publishScript assigns the next offset of a topic, creating the epoch when
// the meta hash is missing (first publication, expiry, or a Redis restart),
// appends to the history stream and publishes to the shard channel, all
// atomically, so pub/sub order is offset order.
//
// KEYS: stream, meta. ARGV: payload, unix nanos, candidate epoch, history
// size, history ttl ms, meta ttl ms, channel, "<len(topic)>:<topic>".
var publishScript = redis.NewScript(`
local ep = redis.call('hget', KEYS[2], 'e')
if not ep then
  ep = ARGV[3]
  redis.call('del', KEYS[2], KEYS[1])
  redis.call('hset', KEYS[2], 'e', ep)
end
local off = redis.call('hincrby', KEYS[2], 'o', 1)
redis.call('pexpire', KEYS[2], ARGV[6])
local size = tonumber(ARGV[4])
if size > 0 then
  redis.call('xadd', KEYS[1], 'MAXLEN', '~', size, off .. '-0', 'd', ARGV[1], 't', ARGV[2])
  redis.call('pexpire', KEYS[1], ARGV[5])
end
redis.call('publish', ARGV[7], 'p' .. off .. ':' .. ARGV[2] .. ':' .. string.len(ep) .. ':' .. ep .. ARGV[8] .. ARGV[1])
return {off, ep}
`)

// historyScript reads the position and, unless ARGV[2] < 0, the stream
// entries after offset ARGV[1] (at most ARGV[2], 0 = all) atomically.
//
// KEYS: stream, meta. ARGV: first offset wanted, count.
var historyScript = redis.NewScript(`
local m = redis.call('hmget', KEYS[2], 'o', 'e')
local n = tonumber(ARGV[2])
if n < 0 or not m[2] then
  return {m[1] or '0', m[2] or '', {}}
end
local r
if n == 0 then
  r = redis.call('xrange', KEYS[1], ARGV[1] .. '-0', '+')
else
  r = redis.call('xrange', KEYS[1], ARGV[1] .. '-0', '+', 'COUNT', n)
end
return {m[1] or '0', m[2], r}
`)

func nowMS() string {
	return `local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
}

// joinScript adds or refreshes a member, publishing a join when it is new.
// Expiry uses the Redis clock so nodes with skewed clocks agree.
//
// KEYS: zset (id -> expiry ms), hash (id -> info). ARGV: id, info, ttl ms,
// key ttl ms, channel, "<len(topic)>:<topic>".
var joinScript = redis.NewScript(nowMS() + `
local added = redis.call('zadd', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
local kt = tonumber(ARGV[4])
if redis.call('pttl', KEYS[1]) < kt then
  redis.call('pexpire', KEYS[1], kt)
  redis.call('pexpire', KEYS[2], kt)
end
if added == 1 then
  redis.call('publish', ARGV[5], 'j' .. ARGV[6] .. string.len(ARGV[1]) .. ':' .. ARGV[1] .. ARGV[2])
end
return added
`)

// refreshScript extends a present, unexpired member. Returns 0 if absent.
//
// KEYS: zset, hash. ARGV: id, ttl ms, key ttl ms.
var refreshScript = redis.NewScript(nowMS() + `
local exp = redis.call('zscore', KEYS[1], ARGV[1])
if not exp or tonumber(exp) <= now then return 0 end
redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local kt = tonumber(ARGV[3])
if redis.call('pttl', KEYS[1]) < kt then
  redis.call('pexpire', KEYS[1], kt)
  redis.call('pexpire', KEYS[2], kt)
end
return 1
`)

// leaveScript removes a member and publishes a leave. Returns 0 if absent.
//
// KEYS: zset, hash. ARGV: id, channel, "<len(topic)>:<topic>".
var leaveScript = redis.NewScript(`
if redis.call('zrem', KEYS[1], ARGV[1]) == 0 then return 0 end
local info = redis.call('hget', KEYS[2], ARGV[1]) or ''
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('publish', ARGV[2], 'l' .. ARGV[3] .. string.len(ARGV[1]) .. ':' .. ARGV[1] .. info)
return 1
`)

// membersScript removes expired members (publishing a leave for each, once,
// since removal is atomic) and returns the rest as a flat id, info list.
//
// KEYS: zset, hash. ARGV: channel, "<len(topic)>:<topic>".
var membersScript = redis.NewScript(nowMS() + `
local gone = redis.call('zrangebyscore', KEYS[1], '-inf', now)
for _, id in ipairs(gone) do
  local info = redis.call('hget', KEYS[2], id) or ''
  redis.call('zrem', KEYS[1], id)
  redis.call('hdel', KEYS[2], id)
  redis.call('publish', ARGV[1], 'l' .. ARGV[2] .. string.len(id) .. ':' .. id .. info)
end
return redis.call('hgetall', KEYS[2])
`)
