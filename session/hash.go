package session

import (
	"hash/maphash"
	"reflect"
	"unsafe"
)

// hashKind selects how a key type is hashed. It is decided once in New from
// the key's reflect.Kind, so that string and integer keys (including named
// types such as `type ConversationID string`) are hashed without allocation
// and without an indirect call that would make the key escape.
type hashKind uint8

const (
	hashGeneric hashKind = iota // maphash.Comparable
	hashString
	hash8
	hash16
	hash32
	hash64
)

func hashKindOf[K comparable]() hashKind {
	t := reflect.TypeFor[K]()
	switch t.Kind() {
	case reflect.String:
		return hashString
	case reflect.Int8, reflect.Uint8:
		return hash8
	case reflect.Int16, reflect.Uint16:
		return hash16
	case reflect.Int32, reflect.Uint32:
		return hash32
	case reflect.Int64, reflect.Uint64, reflect.Int, reflect.Uint, reflect.Uintptr:
		if t.Size() == 8 {
			return hash64
		}
		return hash32
	}
	return hashGeneric
}

// mix64 is the splitmix64 finaliser: a bijective, well-distributed mix of an
// integer key with the per-store seed.
func mix64(x, seed uint64) uint64 {
	x ^= seed
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// hashKey hashes k with the store's seed. It never allocates for string and
// integer kinds; other comparable types go through maphash.Comparable.
func hashKey[K comparable](kind hashKind, seed maphash.Seed, iseed uint64, k *K) uint64 {
	p := unsafe.Pointer(k)
	switch kind {
	case hashString:
		return maphash.String(seed, *(*string)(p))
	case hash64:
		return mix64(*(*uint64)(p), iseed)
	case hash32:
		return mix64(uint64(*(*uint32)(p)), iseed)
	case hash16:
		return mix64(uint64(*(*uint16)(p)), iseed)
	case hash8:
		return mix64(uint64(*(*uint8)(p)), iseed)
	}
	return maphash.Comparable(seed, *k)
}
