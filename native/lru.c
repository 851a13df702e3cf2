/*
 * edge._lru -- a byte-bounded LRU map of Python objects.
 *
 * Every cache hit of the edge node goes through LRU.get(), so this file is
 * written for that call first and for everything else second.
 *
 * Layout
 * ------
 *
 *   LRUObject
 *   +------------+        slots: open addressing, linear probing,
 *   | slots   ---+----->  +-----+-----+   power-of-two size, load <= 2/3,
 *   | nodes   ---+--+     | tag | idx |   backward-shift deletion (no tombstones)
 *   | counters   |  |     +-----+-----+   tag = 32 bits of the key's hash,
 *   +------------+  |     |  0  |  0  |   idx = node index, 0 = empty slot
 *                   |     +-----+-----+
 *                   |     | ... | ... |
 *                   |
 *                   +-->  nodes[]: one contiguous array, grown by 1.5x
 *                         +---------------------------------------------+
 *                      0  | sentinel: next = LRU end, prev = MRU end    |
 *                         +---------------------------------------------+
 *                      1  | key | value | charge | prev | next | tag    |  40 bytes
 *                         +---------------------------------------------+
 *                     ..  | free nodes: key == NULL, chained by .next   |
 *
 *   The doubly linked list runs through the node array by 32-bit index:
 *
 *        sentinel <-> LRU (oldest) <-> ... <-> MRU (newest) <-> sentinel
 *
 *   Overhead per entry: 40 bytes of node (x <= 1.5 slack) + 8 bytes of slot
 *   (x <= 3 slack at load 1/3), i.e. roughly 52..84 bytes, no per-entry
 *   Python object.
 *
 * Rules this file guarantees
 * --------------------------
 *
 * 1. Python code (a key's __hash__/__eq__, a value's __del__, a GC pass
 *    triggered by allocating a GC object, the on_evict callback) only ever
 *    runs while the structure is consistent: table, list, free list,
 *    counters and total all agree.  Evicted pairs are moved into
 *    preallocated tuples without running any code; DECREFs happen last.
 * 2. Any Python code that may run after a lookup bumps `version` if it
 *    changes the structure; callers re-check `version` and redo the lookup.
 * 3. `version` changes on every reordering or structural change (get hit,
 *    put, pop, clear, eviction, resize), so iterators detect mutation and
 *    raise RuntimeError instead of following stale indices.
 * 4. clear(), tp_clear and dealloc first detach the whole node array and
 *    reset the store to the static empty state (no allocation, cannot fail),
 *    then release the detached references.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifdef Py_LIMITED_API
#define TUPLE_SIZE(t) PyTuple_Size(t)
#define TUPLE_ITEM(t, i) PyTuple_GetItem((t), (i))
#define TUPLE_SET(t, i, v) ((void)PyTuple_SetItem((t), (i), (v)))
#define LIST_ITEM(l, i) PyList_GetItem((l), (i))
#define LIST_SET(l, i, v) ((void)PyList_SetItem((l), (i), (v)))
#else
#define TUPLE_SIZE(t) PyTuple_GET_SIZE(t)
#define TUPLE_ITEM(t, i) PyTuple_GET_ITEM((t), (i))
#define TUPLE_SET(t, i, v) PyTuple_SET_ITEM((t), (i), (v))
#define LIST_ITEM(l, i) PyList_GET_ITEM((l), (i))
#define LIST_SET(l, i, v) PyList_SET_ITEM((l), (i), (v))
#endif

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

#define MIN_TABLE_LOG2 3
#define MAX_TABLE_LOG2 31
#define MIN_NODES 8
#define MAX_NODES ((uint64_t)UINT32_MAX)
#define MAX_CAPACITY (PY_SSIZE_T_MAX / 2)
#define FIB32 0x9E3779B1u

typedef struct {
    PyObject *key;      /* NULL: free node (or the sentinel) */
    PyObject *value;
    Py_ssize_t charge;
    uint32_t prev;      /* towards the LRU end */
    uint32_t next;      /* towards the MRU end; free-list link for free nodes */
    uint32_t tag;       /* same tag as the node's slot, to find it again */
    uint16_t freq;      /* S3FIFO: hits, 0..FREQ_MAX (unused in an LRU) */
    uint16_t in_main;   /* S3FIFO: 1 in the main queue, 0 in the small one */
} Node;

typedef struct {
    uint32_t tag;
    uint32_t idx;       /* 0: empty */
} Slot;

/* S3FIFO's ghost: keys evicted from the small queue, remembered by tag only. */
typedef struct {
    uint32_t tag;
    uint32_t unused;
    Py_ssize_t charge;
} GEntry;

typedef struct {
    uint32_t tag;
    uint32_t count;     /* 0: empty */
} GSlot;

#define POLICY_LRU 0
#define POLICY_S3FIFO 1
#define FREQ_MAX 3
#define MAIN_SENTINEL 1u

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Node *nodes;
    uint32_t tmask;      /* table size - 1 */
    uint32_t tshift;     /* 32 - log2(table size) */
    uint32_t nalloc;     /* nodes allocated, sentinel included; 0 = no array */
    uint32_t hwm;        /* first never-used node index */
    uint32_t free_head;  /* free-list head, 0 = empty */
    uint32_t unused;
    Py_ssize_t used;
    Py_ssize_t capacity;
    Py_ssize_t total;
    Py_ssize_t hits;
    Py_ssize_t misses;
    Py_ssize_t inserts;
    Py_ssize_t evictions;
    uint64_t version;
    PyObject *on_evict;
    /* S3FIFO only (policy == POLICY_S3FIFO); an LRU leaves them 0/NULL. */
    int policy;
    Py_ssize_t small_total;  /* charge of the nodes in the small queue */
    GEntry *gring;           /* ghost FIFO: ring of (tag, charge), oldest at ghead */
    GSlot *gslots;           /* ghost set: tag -> number of ring entries with it */
    uint32_t gcap;           /* ring size (power of two), 0 = none */
    uint32_t ghead;
    uint32_t gcount;         /* ring entries */
    uint32_t gdistinct;      /* occupied gslots */
    uint32_t gmask;          /* gslots size - 1 */
    uint32_t gshift;
    Py_ssize_t gtotal;       /* sum of the ring entries' charges */
} LRUObject;

typedef struct {
    PyObject_HEAD
    LRUObject *store;    /* NULL once exhausted */
    uint64_t version;
    uint32_t next;
    uint32_t in_main;    /* S3FIFO: walking the main queue (after the small one) */
} LRUIterObject;

typedef struct {
    PyObject *lru_type;
    PyObject *iter_type;
    PyObject *s3_type;
} ModuleState;

/* The table every empty store points at: one empty slot, never written. */
static Slot empty_slots[1];

/* ------------------------------------------------------------------ */
/* hashing and key equality                                             */

static inline uint32_t
hash_tag(Py_hash_t h)
{
    uint64_t u = (uint64_t)h;
    return (uint32_t)u ^ (uint32_t)(u >> 32);
}

static inline uint32_t
home_slot(uint32_t tag, uint32_t tshift)
{
    /* Fibonacci hashing: spreads int keys (hash(i) == i) over the table. */
    return (uint32_t)((uint64_t)(uint32_t)(tag * FIB32) >> tshift);
}

static inline Py_hash_t
key_hash(PyObject *key)
{
#ifndef Py_LIMITED_API
    if (LIKELY(PyUnicode_CheckExact(key))) {
        Py_hash_t h = ((PyASCIIObject *)key)->hash;
        if (LIKELY(h != -1)) {
            return h;
        }
    }
#endif
    return PyObject_Hash(key);
}

/* Equality of two exact str or two exact bytes: runs no Python code.
   Returns 1, 0, or -1 when the pair is not of that kind. */
static inline int
builtin_key_eq(PyObject *a, PyObject *b)
{
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b)) {
#ifndef Py_LIMITED_API
        Py_ssize_t len = PyUnicode_GET_LENGTH(a);
        if (len != PyUnicode_GET_LENGTH(b)) {
            return 0;
        }
        int kind = PyUnicode_KIND(a);
        if (kind != (int)PyUnicode_KIND(b)) {
            return 0;
        }
        return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * kind) == 0;
#else
        return PyUnicode_Compare(a, b) == 0;
#endif
    }
    if (PyBytes_CheckExact(a) && PyBytes_CheckExact(b)) {
#ifndef Py_LIMITED_API
        Py_ssize_t len = PyBytes_GET_SIZE(a);
        return len == PyBytes_GET_SIZE(b) &&
               memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)len) == 0;
#else
        Py_ssize_t len = PyBytes_Size(a);
        return len == PyBytes_Size(b) &&
               memcmp(PyBytes_AsString(a), PyBytes_AsString(b), (size_t)len) == 0;
#endif
    }
    return -1;
}

/* Find `key`.  Returns the node index (> 0), 0 when absent, -1 on error.
   *pos receives the slot holding the key, or the empty slot ending the
   probe.  A general __eq__ may mutate the store: the probe restarts then. */
static Py_ssize_t
lookup(LRUObject *self, PyObject *key, uint32_t tag, uint32_t *pos)
{
restart:;
    Slot *slots = self->slots;
    uint32_t mask = self->tmask;
    uint32_t i = home_slot(tag, self->tshift);
    for (;;) {
        Slot s = slots[i];
        if (s.idx == 0) {
            *pos = i;
            return 0;
        }
        if (s.tag == tag) {
            PyObject *k = self->nodes[s.idx].key;
            if (LIKELY(k == key)) {
                *pos = i;
                return s.idx;
            }
            int eq = builtin_key_eq(k, key);
            if (eq < 0) {
                uint64_t version = self->version;
                Py_INCREF(k);
                eq = PyObject_RichCompareBool(k, key, Py_EQ);
                Py_DECREF(k);
                if (eq < 0) {
                    return -1;
                }
                if (version != self->version) {
                    goto restart;
                }
            }
            if (eq) {
                *pos = i;
                return s.idx;
            }
        }
        i = (i + 1) & mask;
    }
}

/* Probe for the empty slot where a key known to be absent goes. */
static inline uint32_t
find_empty(LRUObject *self, uint32_t tag)
{
    uint32_t i = home_slot(tag, self->tshift);
    while (self->slots[i].idx != 0) {
        i = (i + 1) & self->tmask;
    }
    return i;
}

/* ------------------------------------------------------------------ */
/* table, nodes, list                                                   */

static void
table_delete_at(LRUObject *self, uint32_t i)
{
    Slot *slots = self->slots;
    uint32_t mask = self->tmask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].idx == 0) {
            break;
        }
        uint32_t k = home_slot(slots[j].tag, self->tshift);
        /* The entry at j may fill the hole at i unless its home lies
           cyclically in (i, j]. */
        if (((j - k) & mask) >= ((j - i) & mask)) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].idx = 0;
    slots[i].tag = 0;
}

static void
table_remove_node(LRUObject *self, uint32_t idx)
{
    uint32_t i = home_slot(self->nodes[idx].tag, self->tshift);
    while (self->slots[i].idx != idx) {
        i = (i + 1) & self->tmask;
    }
    table_delete_at(self, i);
}

/* Grow the table so that one more entry keeps load <= 2/3. */
static int
table_reserve(LRUObject *self)
{
    uint64_t size = (uint64_t)self->tmask + 1;
    uint64_t need = (uint64_t)self->used + 1;
    if (need * 3 <= size * 2) {
        return 0;
    }
    unsigned log2 = MIN_TABLE_LOG2;
    while (((uint64_t)1 << log2) * 2 < need * 3) {
        log2++;
    }
    if (log2 > MAX_TABLE_LOG2) {
        PyErr_SetString(PyExc_MemoryError, "LRU: too many entries");
        return -1;
    }
    uint64_t nsize = (uint64_t)1 << log2;
    Slot *ns = PyMem_Calloc((size_t)nsize, sizeof(Slot));
    if (ns == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t nmask = (uint32_t)(nsize - 1);
    uint32_t nshift = 32 - log2;
    for (uint64_t o = 0; o < size; o++) {
        Slot s = self->slots[o];
        if (s.idx != 0) {
            uint32_t i = home_slot(s.tag, nshift);
            while (ns[i].idx != 0) {
                i = (i + 1) & nmask;
            }
            ns[i] = s;
        }
    }
    if (self->slots != empty_slots) {
        PyMem_Free(self->slots);
    }
    self->slots = ns;
    self->tmask = nmask;
    self->tshift = nshift;
    self->version++;
    return 0;
}

/* Make sure node_alloc() has a node to hand out. */
static int
nodes_reserve(LRUObject *self)
{
    if (self->free_head != 0 || self->hwm < self->nalloc) {
        return 0;
    }
    uint64_t n = self->nalloc ? (uint64_t)self->nalloc + self->nalloc / 2 : MIN_NODES;
    if (n > MAX_NODES) {
        n = MAX_NODES;
    }
    if (n <= self->nalloc) {
        PyErr_SetString(PyExc_MemoryError, "LRU: too many entries");
        return -1;
    }
    Node *nodes = PyMem_Realloc(self->nodes, (size_t)n * sizeof(Node));
    if (nodes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->nalloc == 0) {
        memset(&nodes[0], 0, sizeof(Node));  /* the sentinel (S3FIFO: of the small queue) */
        self->hwm = 1;
        if (self->policy == POLICY_S3FIFO) {
            memset(&nodes[MAIN_SENTINEL], 0, sizeof(Node));  /* the main queue's */
            nodes[MAIN_SENTINEL].prev = nodes[MAIN_SENTINEL].next = MAIN_SENTINEL;
            self->hwm = 2;
        }
    }
    self->nodes = nodes;
    self->nalloc = (uint32_t)n;
    self->version++;
    return 0;
}

static inline uint32_t
node_alloc(LRUObject *self)
{
    uint32_t i = self->free_head;
    if (i != 0) {
        self->free_head = self->nodes[i].next;
        return i;
    }
    return self->hwm++;
}

static inline void
node_free(LRUObject *self, uint32_t i)
{
    Node *n = &self->nodes[i];
    n->key = NULL;
    n->value = NULL;
    n->next = self->free_head;
    self->free_head = i;
}

static inline void
list_unlink(Node *nodes, uint32_t i)
{
    uint32_t p = nodes[i].prev, n = nodes[i].next;
    nodes[p].next = n;
    nodes[n].prev = p;
}

static inline void
list_append(Node *nodes, uint32_t i)
{
    uint32_t last = nodes[0].prev;
    nodes[i].prev = last;
    nodes[i].next = 0;
    nodes[last].next = i;
    nodes[0].prev = i;
}

/* Take node i out of table and list; its key/value refs stay in the node. */
static void
detach(LRUObject *self, uint32_t i)
{
    table_remove_node(self, i);
    list_unlink(self->nodes, i);
    self->used--;
    self->total -= self->nodes[i].charge;
}

/* How many nodes from the LRU end (skipping `skip`) must go for a store
   whose total would be `total` to fit in `limit`.  Runs no Python code. */
static Py_ssize_t
count_evictions(LRUObject *self, Py_ssize_t total, Py_ssize_t limit, uint32_t skip)
{
    Py_ssize_t c = 0;
    if (total <= limit) {
        return 0;
    }
    uint32_t i = self->nodes[0].next;
    while (total > limit && i != 0) {
        if (i != skip) {
            total -= self->nodes[i].charge;
            c++;
        }
        i = self->nodes[i].next;
    }
    return c;
}

/* A list of c empty 2-tuples.  Allocating may run a GC pass, hence
   arbitrary Python code: callers check `version` afterwards. */
static PyObject *
alloc_pairs(Py_ssize_t c)
{
    PyObject *list = PyList_New(c);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < c; j++) {
        PyObject *t = PyTuple_New(2);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        LIST_SET(list, j, t);
    }
    return list;
}

/* Evict exactly c nodes from the LRU end into the preallocated tuples.
   Moves references; runs no Python code. */
static void
evict_into(LRUObject *self, PyObject *pairs, Py_ssize_t c)
{
    for (Py_ssize_t j = 0; j < c; j++) {
        uint32_t i = self->nodes[0].next;
        Node *n = &self->nodes[i];
        detach(self, i);
        PyObject *t = LIST_ITEM(pairs, j);
        TUPLE_SET(t, 0, n->key);
        TUPLE_SET(t, 1, n->value);
        node_free(self, i);
        self->evictions++;
    }
    if (c > 0) {
        self->version++;
    }
}

/* ------------------------------------------------------------------ */
/* S3FIFO's ghost: a bounded FIFO of the tags of keys evicted from the */
/* small queue, with a counted set for membership.  Raw memory only:   */
/* runs no Python code; an allocation failure just forgets the key.    */

static inline Py_ssize_t
s3_small_target(LRUObject *self)
{
    return self->capacity / 10;
}

static inline Py_ssize_t
ghost_limit_bytes(LRUObject *self)
{
    return self->capacity - self->capacity / 10;
}

static inline Py_ssize_t
ghost_limit_count(LRUObject *self)
{
    return self->capacity / 1024 + 64;
}

static Py_ssize_t
ghost_find(LRUObject *self, uint32_t tag)
{
    if (self->gslots == NULL) {
        return -1;
    }
    uint32_t i = home_slot(tag, self->gshift);
    while (self->gslots[i].count != 0) {
        if (self->gslots[i].tag == tag) {
            return i;
        }
        i = (i + 1) & self->gmask;
    }
    return -1;
}

static void
ghost_delete_at(LRUObject *self, uint32_t i)
{
    GSlot *slots = self->gslots;
    uint32_t mask = self->gmask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].count == 0) {
            break;
        }
        uint32_t k = home_slot(slots[j].tag, self->gshift);
        if (((j - k) & mask) >= ((j - i) & mask)) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].count = 0;
    slots[i].tag = 0;
}

static void
ghost_pop_front(LRUObject *self)
{
    GEntry e = self->gring[self->ghead];
    self->ghead = (self->ghead + 1) & (self->gcap - 1);
    self->gcount--;
    self->gtotal -= e.charge;
    Py_ssize_t i = ghost_find(self, e.tag);
    if (i >= 0 && --self->gslots[i].count == 0) {
        ghost_delete_at(self, (uint32_t)i);
        self->gdistinct--;
    }
}

static void
ghost_trim(LRUObject *self)
{
    Py_ssize_t lb = ghost_limit_bytes(self), lc = ghost_limit_count(self);
    while (self->gcount > 0 && (self->gtotal > lb || (Py_ssize_t)self->gcount > lc)) {
        ghost_pop_front(self);
    }
}

static void
ghost_free(LRUObject *self)
{
    PyMem_Free(self->gring);
    PyMem_Free(self->gslots);
    self->gring = NULL;
    self->gslots = NULL;
    self->gcap = self->ghead = self->gcount = self->gdistinct = 0;
    self->gmask = 0;
    self->gshift = 32;
    self->gtotal = 0;
}

static int
ghost_reserve(LRUObject *self)
{
    if (self->gcount == self->gcap) {
        uint64_t n = self->gcap ? (uint64_t)self->gcap * 2 : 16;
        if (n > ((uint64_t)1 << 31)) {
            return -1;
        }
        GEntry *ring = PyMem_Malloc((size_t)n * sizeof(GEntry));
        if (ring == NULL) {
            return -1;
        }
        for (uint32_t j = 0; j < self->gcount; j++) {
            ring[j] = self->gring[(self->ghead + j) & (self->gcap - 1)];
        }
        PyMem_Free(self->gring);
        self->gring = ring;
        self->gcap = (uint32_t)n;
        self->ghead = 0;
    }
    uint64_t size = self->gslots ? (uint64_t)self->gmask + 1 : 0;
    if (((uint64_t)self->gdistinct + 1) * 3 > size * 2) {
        unsigned log2 = MIN_TABLE_LOG2;
        while (((uint64_t)1 << log2) * 2 < ((uint64_t)self->gdistinct + 1) * 3) {
            log2++;
        }
        if (log2 > MAX_TABLE_LOG2) {
            return -1;
        }
        uint64_t nsize = (uint64_t)1 << log2;
        GSlot *ns = PyMem_Calloc((size_t)nsize, sizeof(GSlot));
        if (ns == NULL) {
            return -1;
        }
        uint32_t nmask = (uint32_t)(nsize - 1), nshift = 32 - log2;
        for (uint64_t o = 0; o < size; o++) {
            GSlot s = self->gslots[o];
            if (s.count != 0) {
                uint32_t i = home_slot(s.tag, nshift);
                while (ns[i].count != 0) {
                    i = (i + 1) & nmask;
                }
                ns[i] = s;
            }
        }
        PyMem_Free(self->gslots);
        self->gslots = ns;
        self->gmask = nmask;
        self->gshift = nshift;
    }
    return 0;
}

static void
ghost_add(LRUObject *self, uint32_t tag, Py_ssize_t charge)
{
    if (ghost_reserve(self) < 0) {
        return;  /* out of memory: the key is simply not remembered */
    }
    GEntry *e = &self->gring[(self->ghead + self->gcount) & (self->gcap - 1)];
    e->tag = tag;
    e->unused = 0;
    e->charge = charge;
    self->gcount++;
    self->gtotal += charge;
    Py_ssize_t i = ghost_find(self, tag);
    if (i >= 0) {
        self->gslots[i].count++;
    }
    else {
        uint32_t j = home_slot(tag, self->gshift);
        while (self->gslots[j].count != 0) {
            j = (j + 1) & self->gmask;
        }
        self->gslots[j].tag = tag;
        self->gslots[j].count = 1;
        self->gdistinct++;
    }
    ghost_trim(self);
}

/* Detach everything: the store becomes empty without allocating.  The
   returned array (or NULL) holds the references still to release with
   release_nodes(). */
static Node *
detach_all(LRUObject *self, uint32_t *hwm)
{
    Node *nodes = self->nodes;
    *hwm = self->hwm;
    if (self->slots != empty_slots) {
        PyMem_Free(self->slots);
    }
    self->slots = empty_slots;
    self->tmask = 0;
    self->tshift = 32;
    self->nodes = NULL;
    self->nalloc = 0;
    self->hwm = 0;
    self->free_head = 0;
    self->used = 0;
    self->total = 0;
    self->small_total = 0;
    ghost_free(self);
    self->version++;
    return nodes;
}

static void
release_nodes(Node *nodes, uint32_t hwm)
{
    if (nodes == NULL) {
        return;
    }
    /* The array is private now: Python code run by these DECREFs only
       sees the (new, empty) store. */
    for (uint32_t i = 1; i < hwm; i++) {
        PyObject *k = nodes[i].key;
        if (k != NULL) {
            PyObject *v = nodes[i].value;
            nodes[i].key = NULL;
            nodes[i].value = NULL;
            Py_DECREF(k);
            Py_DECREF(v);
        }
    }
    PyMem_Free(nodes);
}

/* ------------------------------------------------------------------ */
/* argument parsing for METH_FASTCALL | METH_KEYWORDS                   */

static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           const char *const *names, Py_ssize_t nreq, Py_ssize_t nmax, PyObject **out)
{
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)",
                     fname, nmax, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nmax; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = TUPLE_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *name = TUPLE_ITEM(kwnames, k);
            Py_ssize_t i;
            for (i = 0; i < nmax; i++) {
                if (PyUnicode_CompareWithASCIIString(name, names[i]) == 0) {
                    break;
                }
            }
            if (i == nmax) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, name);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (Py_ssize_t i = 0; i < nreq; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

static const char *const key_default_names[] = {"key", "default", NULL};

/* ------------------------------------------------------------------ */
/* LRU methods                                                          */

PyDoc_STRVAR(get_doc,
"get(key, default=None)\n--\n\n"
"Return the value for key and mark it most recently used (counts a hit),\n"
"or return default (counts a miss).");

static PyObject *
LRU_get(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (LIKELY(nargs == 1 && kwnames == NULL)) {
        a[0] = args[0];
        a[1] = NULL;
    }
    else if (parse_args("get", args, nargs, kwnames, key_default_names, 1, 2, a) < 0) {
        return NULL;
    }
    PyObject *key = a[0];
    Py_hash_t h = key_hash(key);
    if (UNLIKELY(h == -1)) {
        return NULL;
    }
    uint32_t pos;
    Py_ssize_t idx = lookup(self, key, hash_tag(h), &pos);
    if (idx > 0) {
        Node *nodes = self->nodes;
        uint32_t i = (uint32_t)idx;
        self->hits++;
        self->version++;
        if (nodes[0].prev != i) {
            list_unlink(nodes, i);
            list_append(nodes, i);
        }
        PyObject *v = nodes[i].value;
        Py_INCREF(v);
        return v;
    }
    if (idx < 0) {
        return NULL;
    }
    self->misses++;
    PyObject *d = a[1] ? a[1] : Py_None;
    Py_INCREF(d);
    return d;
}

PyDoc_STRVAR(peek_doc,
"peek(key, default=None)\n--\n\n"
"Return the value for key without promoting it or counting anything.");

static PyObject *
LRU_peek(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (parse_args("peek", args, nargs, kwnames, key_default_names, 1, 2, a) < 0) {
        return NULL;
    }
    Py_hash_t h = key_hash(a[0]);
    if (h == -1) {
        return NULL;
    }
    uint32_t pos;
    Py_ssize_t idx = lookup(self, a[0], hash_tag(h), &pos);
    if (idx < 0) {
        return NULL;
    }
    PyObject *v = idx > 0 ? self->nodes[idx].value : (a[1] ? a[1] : Py_None);
    Py_INCREF(v);
    return v;
}

static int
check_charge(LRUObject *self, Py_ssize_t charge)
{
    if (charge < 0) {
        PyErr_Format(PyExc_ValueError, "charge must be >= 0, got %zd", charge);
        return -1;
    }
    if (charge > self->capacity) {
        PyErr_Format(PyExc_ValueError,
                     "charge %zd exceeds the store capacity %zd: the object cannot be cached",
                     charge, self->capacity);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(put_doc,
"put(key, value, charge)\n--\n\n"
"Insert or replace key with value, charged `charge` bytes, as most recently\n"
"used; evict from the least recently used end until total_charge <=\n"
"capacity.  Return the evicted (key, value) pairs, least recently used\n"
"first.  A charge above capacity (or below 0) raises ValueError and leaves\n"
"the store unchanged.");

static const char *const put_names[] = {"key", "value", "charge", NULL};

static PyObject *
LRU_put(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    if (LIKELY(nargs == 3 && kwnames == NULL)) {
        a[0] = args[0];
        a[1] = args[1];
        a[2] = args[2];
    }
    else if (parse_args("put", args, nargs, kwnames, put_names, 3, 3, a) < 0) {
        return NULL;
    }
    PyObject *key = a[0], *value = a[1];
    Py_ssize_t charge = PyLong_CheckExact(a[2]) ? PyLong_AsSsize_t(a[2])
                                                : PyNumber_AsSsize_t(a[2], PyExc_OverflowError);
    if (charge == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_charge(self, charge) < 0) {
        return NULL;
    }
    Py_hash_t h = key_hash(key);
    if (h == -1) {
        return NULL;
    }
    uint32_t tag = hash_tag(h);

    for (;;) {
        uint32_t pos;
        Py_ssize_t idx = lookup(self, key, tag, &pos);
        if (idx < 0) {
            return NULL;
        }
        /* Re-check: __hash__/__eq__ may have changed the capacity. */
        if (check_charge(self, charge) < 0) {
            return NULL;
        }
        Py_ssize_t newtotal = idx > 0 ? self->total - self->nodes[idx].charge + charge
                                      : self->total + charge;
        Py_ssize_t c = count_evictions(self, newtotal, self->capacity, (uint32_t)idx);
        uint64_t version = self->version;
        PyObject *pairs = alloc_pairs(c);
        if (pairs == NULL) {
            return NULL;
        }
        if (UNLIKELY(version != self->version)) {
            Py_DECREF(pairs);  /* a GC pass ran code that changed the store */
            continue;
        }
        PyObject *old = NULL;
        if (idx > 0) {
            uint32_t i = (uint32_t)idx;
            Node *n = &self->nodes[i];
            old = n->value;
            Py_INCREF(value);
            n->value = value;
            self->total += charge - n->charge;
            n->charge = charge;
            if (self->nodes[0].prev != i) {
                list_unlink(self->nodes, i);
                list_append(self->nodes, i);
            }
        }
        else {
            /* Raw memory only below: no Python code can run. */
            if (nodes_reserve(self) < 0) {
                Py_DECREF(pairs);
                return NULL;
            }
            if ((uint64_t)(self->used + 1) * 3 > ((uint64_t)self->tmask + 1) * 2) {
                if (table_reserve(self) < 0) {
                    Py_DECREF(pairs);
                    return NULL;
                }
                pos = find_empty(self, tag);
            }
            uint32_t i = node_alloc(self);
            Node *n = &self->nodes[i];
            Py_INCREF(key);
            Py_INCREF(value);
            n->key = key;
            n->value = value;
            n->charge = charge;
            n->tag = tag;
            self->slots[pos].tag = tag;
            self->slots[pos].idx = i;
            list_append(self->nodes, i);
            self->used++;
            self->total += charge;
        }
        self->inserts++;
        self->version++;
        evict_into(self, pairs, c);
        Py_XDECREF(old);
        return pairs;
    }
}

PyDoc_STRVAR(pop_doc,
"pop(key[, default])\n--\n\n"
"Remove key and return its value; without default, a missing key raises\n"
"KeyError.");

static PyObject *
LRU_pop(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (parse_args("pop", args, nargs, kwnames, key_default_names, 1, 2, a) < 0) {
        return NULL;
    }
    Py_hash_t h = key_hash(a[0]);
    if (h == -1) {
        return NULL;
    }
    uint32_t pos;
    Py_ssize_t idx = lookup(self, a[0], hash_tag(h), &pos);
    if (idx < 0) {
        return NULL;
    }
    if (idx == 0) {
        if (a[1] == NULL) {
            PyErr_SetObject(PyExc_KeyError, a[0]);
            return NULL;
        }
        Py_INCREF(a[1]);
        return a[1];
    }
    uint32_t i = (uint32_t)idx;
    PyObject *k = self->nodes[i].key, *v = self->nodes[i].value;
    table_delete_at(self, pos);
    list_unlink(self->nodes, i);
    self->used--;
    self->total -= self->nodes[i].charge;
    if (self->policy == POLICY_S3FIFO && !self->nodes[i].in_main) {
        self->small_total -= self->nodes[i].charge;
    }
    node_free(self, i);
    self->version++;
    Py_DECREF(k);
    return v;
}

PyDoc_STRVAR(clear_doc, "clear()\n--\n\nRemove every entry (counters are kept).");

static PyObject *
LRU_clear_method(LRUObject *self, PyObject *Py_UNUSED(ignored))
{
    uint32_t hwm;
    Node *nodes = detach_all(self, &hwm);
    release_nodes(nodes, hwm);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(items_lru_doc,
"items_lru()\n--\n\n"
"A list of (key, value) pairs, least recently used first.");

static PyObject *
LRU_items_lru(LRUObject *self, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        Py_ssize_t n = self->used;
        uint64_t version = self->version;
        PyObject *pairs = alloc_pairs(n);
        if (pairs == NULL) {
            return NULL;
        }
        if (version != self->version || n != self->used) {
            Py_DECREF(pairs);
            continue;
        }
        uint32_t i = n ? self->nodes[0].next : 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            if (i == 0) {
                i = self->nodes[MAIN_SENTINEL].next;  /* S3FIFO: small done, then main */
            }
            Node *nd = &self->nodes[i];
            PyObject *t = LIST_ITEM(pairs, j);
            Py_INCREF(nd->key);
            Py_INCREF(nd->value);
            TUPLE_SET(t, 0, nd->key);
            TUPLE_SET(t, 1, nd->value);
            i = nd->next;
        }
        return pairs;
    }
}

PyDoc_STRVAR(stats_doc,
"stats()\n--\n\n"
"A dict of hits, misses, inserts, evictions, bytes (total charge), entries.");

static PyObject *
LRU_stats(LRUObject *self, PyObject *Py_UNUSED(ignored))
{
    /* Snapshot first: building the dict may run a GC pass. */
    Py_ssize_t hits = self->hits, misses = self->misses, inserts = self->inserts,
               evictions = self->evictions, total = self->total, used = self->used;
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n}", "hits", hits, "misses", misses,
                         "inserts", inserts, "evictions", evictions, "bytes", total,
                         "entries", used);
}

PyDoc_STRVAR(sizeof_doc, "__sizeof__()\n--\n\nBytes used by the store itself.");

static PyObject *
LRU_sizeof(LRUObject *self, PyObject *Py_UNUSED(ignored))
{
    size_t n = sizeof(LRUObject) + (size_t)self->nalloc * sizeof(Node);
    if (self->slots != empty_slots) {
        n += ((size_t)self->tmask + 1) * sizeof(Slot);
    }
    n += (size_t)self->gcap * sizeof(GEntry);
    if (self->gslots != NULL) {
        n += ((size_t)self->gmask + 1) * sizeof(GSlot);
    }
    return PyLong_FromSize_t(n);
}

#define CHECK(cond, msg)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            PyErr_SetString(PyExc_AssertionError, (msg));       \
            return NULL;                                        \
        }                                                       \
    } while (0)

PyDoc_STRVAR(selfcheck_doc,
"_selfcheck()\n--\n\n"
"Verify every internal invariant; raise AssertionError on corruption.\n"
"O(n + table size): for tests only.");

static PyObject *
LRU_selfcheck(LRUObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK(self->used >= 0 && self->total >= 0, "negative counters");
    CHECK(self->total <= self->capacity, "total_charge exceeds capacity");
    if (self->nodes == NULL) {
        CHECK(self->used == 0 && self->total == 0, "entries without a node array");
        CHECK(self->slots == empty_slots, "table without a node array");
        Py_RETURN_NONE;
    }
    Node *nodes = self->nodes;
    int s3 = self->policy == POLICY_S3FIFO;
    uint32_t nsentinels = s3 ? 2 : 1;
    CHECK(self->hwm >= nsentinels && self->hwm <= self->nalloc, "bad high-water mark");
    /* list(s): an LRU's one, or S3FIFO's small queue (sentinel 0) then main */
    Py_ssize_t count = 0, total = 0, small_total = 0;
    for (uint32_t q = 0; q < nsentinels; q++) {
    CHECK(nodes[q].key == NULL, "sentinel holds a key");
    uint32_t prev = q, i = nodes[q].next;
    while (i != q) {
        CHECK(i >= nsentinels && i < self->hwm, "list index out of range");
        CHECK(nodes[i].key != NULL && nodes[i].value != NULL, "free node in list");
        CHECK(nodes[i].prev == prev, "broken prev link");
        CHECK(nodes[i].charge >= 0, "negative charge");
        if (s3) {
            CHECK(nodes[i].freq <= FREQ_MAX, "frequency above its maximum");
            CHECK(nodes[i].in_main == (q == MAIN_SENTINEL), "node in the wrong queue");
            if (q == 0) {
                small_total += nodes[i].charge;
            }
        }
        count++;
        total += nodes[i].charge;
        CHECK(count <= self->used, "list longer than len()");
        /* its slot */
        uint32_t s = home_slot(nodes[i].tag, self->tshift);
        uint32_t steps = 0;
        while (self->slots[s].idx != i) {
            CHECK(self->slots[s].idx != 0, "node missing from table");
            s = (s + 1) & self->tmask;
            CHECK(++steps <= self->tmask, "table probe does not terminate");
        }
        CHECK(self->slots[s].tag == nodes[i].tag, "slot tag differs from node tag");
        prev = i;
        i = nodes[i].next;
    }
    CHECK(nodes[q].prev == prev, "sentinel prev is not the last node");
    }
    CHECK(count == self->used, "list shorter than len()");
    if (s3) {
        CHECK(small_total == self->small_total, "small_total differs from the small queue");
        /* the ghost */
        CHECK(self->gcount <= self->gcap, "ghost ring overfull");
        CHECK(self->gcount == 0 || (self->gtotal <= ghost_limit_bytes(self) &&
                                    (Py_ssize_t)self->gcount <= ghost_limit_count(self)),
              "ghost over its bounds");
        Py_ssize_t gt = 0;
        for (uint32_t j = 0; j < self->gcount; j++) {
            GEntry e = self->gring[(self->ghead + j) & (self->gcap - 1)];
            gt += e.charge;
            CHECK(ghost_find(self, e.tag) >= 0, "ghost entry missing from the ghost set");
        }
        CHECK(gt == self->gtotal, "ghost total differs from its entries");
        uint64_t counted = 0, distinct = 0;
        if (self->gslots != NULL) {
            for (uint64_t j = 0; j <= self->gmask; j++) {
                if (self->gslots[j].count) {
                    counted += self->gslots[j].count;
                    distinct++;
                }
            }
        }
        CHECK(counted == self->gcount && distinct == self->gdistinct, "ghost set counts differ");
    }
    CHECK(total == self->total, "total_charge differs from the sum of charges");
    /* table */
    Py_ssize_t occupied = 0;
    for (uint64_t s = 0; s <= self->tmask; s++) {
        if (self->slots[s].idx != 0) {
            occupied++;
            CHECK(self->slots[s].idx < self->hwm, "slot index out of range");
            CHECK(nodes[self->slots[s].idx].key != NULL, "slot points at a free node");
        }
    }
    CHECK(occupied == self->used, "table count differs from len()");
    CHECK((uint64_t)self->used * 3 <= ((uint64_t)self->tmask + 1) * 2, "table overloaded");
    /* free list */
    Py_ssize_t nfree = 0;
    for (uint32_t f = self->free_head; f != 0; f = nodes[f].next) {
        CHECK(f >= nsentinels && f < self->hwm, "free index out of range");
        CHECK(nodes[f].key == NULL, "live node in free list");
        CHECK(++nfree < (Py_ssize_t)self->hwm, "free list cycle");
    }
    CHECK(nfree + self->used + (Py_ssize_t)nsentinels == (Py_ssize_t)self->hwm,
          "nodes leaked from the free list");
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* S3FIFO methods                                                       */
/*                                                                      */
/* Two FIFO queues through the same node array: small (sentinel 0) and */
/* main (sentinel MAIN_SENTINEL), plus the ghost above.  A hit only     */
/* raises the node's frequency (0..3); eviction walks the queues:      */
/* while the small queue holds more than capacity/10 bytes (or main is */
/* empty) its oldest node goes to main if it was hit, else out (its    */
/* tag to the ghost); otherwise main's oldest is reinserted at main's  */
/* tail with frequency - 1 if it was hit, else out.  A new key whose   */
/* tag is in the ghost starts in main.                                  */

/* The evicted references of one call, held until the store is
   consistent again. */
typedef struct {
    PyObject **items;
    Py_ssize_t n;
    Py_ssize_t cap;
    PyObject *local[32];
} Pending;

static void
pending_init(Pending *p)
{
    p->items = p->local;
    p->n = 0;
    p->cap = 32;
}

static int
pending_reserve(Pending *p)
{
    if (p->n + 2 <= p->cap) {
        return 0;
    }
    Py_ssize_t ncap = p->cap * 2;
    PyObject **items;
    if (p->items == p->local) {
        items = PyMem_Malloc((size_t)ncap * sizeof(PyObject *));
        if (items != NULL) {
            memcpy(items, p->local, (size_t)p->n * sizeof(PyObject *));
        }
    }
    else {
        items = PyMem_Realloc(p->items, (size_t)ncap * sizeof(PyObject *));
    }
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->items = items;
    p->cap = ncap;
    return 0;
}

/* Drop the held references (may run Python code: the store must be
   consistent). */
static void
pending_release(Pending *p)
{
    for (Py_ssize_t j = 0; j < p->n; j++) {
        Py_DECREF(p->items[j]);
    }
    p->n = 0;
    if (p->items != p->local) {
        PyMem_Free(p->items);
        p->items = p->local;
    }
}

/* The held pairs as a list of (key, value) tuples; NULL on failure
   (the pairs are then dropped). */
static PyObject *
pending_to_list(Pending *p)
{
    PyObject *list = alloc_pairs(p->n / 2);
    if (list == NULL) {
        pending_release(p);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < p->n / 2; j++) {
        PyObject *t = LIST_ITEM(list, j);
        TUPLE_SET(t, 0, p->items[2 * j]);
        TUPLE_SET(t, 1, p->items[2 * j + 1]);
    }
    p->n = 0;
    pending_release(p);
    return list;
}

static inline void
list_push(Node *nodes, uint32_t sentinel, uint32_t i)
{
    uint32_t last = nodes[sentinel].prev;
    nodes[i].prev = last;
    nodes[i].next = sentinel;
    nodes[last].next = i;
    nodes[sentinel].prev = i;
}

/* One step of eviction.  Returns the index of a node taken out of table
   and queues (its references still in it), or 0 when a node only moved.
   Requires at least one node. */
static uint32_t
s3_step(LRUObject *self)
{
    Node *nodes = self->nodes;
    uint32_t i;
    if (self->small_total > s3_small_target(self) || nodes[MAIN_SENTINEL].next == MAIN_SENTINEL) {
        i = nodes[0].next;
        Node *n = &nodes[i];
        list_unlink(nodes, i);
        self->small_total -= n->charge;
        if (n->freq) {
            n->freq = 0;  /* hit while in small: to main, frequency 0 */
            n->in_main = 1;
            list_push(nodes, MAIN_SENTINEL, i);
            return 0;
        }
        table_remove_node(self, i);
        self->used--;
        self->total -= n->charge;
        ghost_add(self, n->tag, n->charge);
        return i;
    }
    i = nodes[MAIN_SENTINEL].next;
    Node *n = &nodes[i];
    list_unlink(nodes, i);
    if (n->freq) {
        n->freq--;  /* reinsert with one hit fewer */
        list_push(nodes, MAIN_SENTINEL, i);
        return 0;
    }
    table_remove_node(self, i);
    self->used--;
    self->total -= n->charge;
    return i;
}

/* Evict until total <= limit, the pairs into p.  Runs no Python code;
   -1 (MemoryError) leaves the store consistent with fewer entries. */
static int
s3_make_room(LRUObject *self, Py_ssize_t limit, Pending *p)
{
    int rc = 0;
    int changed = 0;
    while (self->total > limit) {
        if (pending_reserve(p) < 0) {
            rc = -1;
            break;
        }
        changed = 1;
        uint32_t i = s3_step(self);
        if (i != 0) {
            Node *n = &self->nodes[i];
            p->items[p->n++] = n->key;
            p->items[p->n++] = n->value;
            node_free(self, i);
            self->evictions++;
        }
    }
    if (changed) {
        self->version++;
    }
    return rc;
}

static PyObject *
S3_get(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (LIKELY(nargs == 1 && kwnames == NULL)) {
        a[0] = args[0];
        a[1] = NULL;
    }
    else if (parse_args("get", args, nargs, kwnames, key_default_names, 1, 2, a) < 0) {
        return NULL;
    }
    PyObject *key = a[0];
    Py_hash_t h = key_hash(key);
    if (UNLIKELY(h == -1)) {
        return NULL;
    }
    uint32_t pos;
    Py_ssize_t idx = lookup(self, key, hash_tag(h), &pos);
    if (idx > 0) {
        Node *n = &self->nodes[idx];
        self->hits++;
        self->version++;
        if (UNLIKELY(n->freq != FREQ_MAX)) {  /* a hot object's is saturated */
            n->freq++;
        }
        PyObject *v = n->value;
        Py_INCREF(v);
        return v;
    }
    if (idx < 0) {
        return NULL;
    }
    self->misses++;
    PyObject *d = a[1] ? a[1] : Py_None;
    Py_INCREF(d);
    return d;
}

PyDoc_STRVAR(s3_get_doc,
"get(key, default=None)\n--\n\n"
"Return the value for key and count a hit (the key's frequency rises, up\n"
"to 3; nothing moves), or return default (counts a miss).");

PyDoc_STRVAR(s3_put_doc,
"put(key, value, charge)\n--\n\n"
"Insert or replace key with value, charged `charge` bytes.  First evicts\n"
"(S3-FIFO) until the new charge fits, then stores the key at the tail of\n"
"the small queue (of the main queue when its tag is in the ghost); a\n"
"replaced key keeps its queue, goes to its tail and counts as a hit.\n"
"Return the evicted (key, value) pairs in eviction order.  A charge above\n"
"capacity (or below 0) raises ValueError and leaves the store unchanged.");

static PyObject *
S3_put(LRUObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    if (LIKELY(nargs == 3 && kwnames == NULL)) {
        a[0] = args[0];
        a[1] = args[1];
        a[2] = args[2];
    }
    else if (parse_args("put", args, nargs, kwnames, put_names, 3, 3, a) < 0) {
        return NULL;
    }
    PyObject *key = a[0], *value = a[1];
    Py_ssize_t charge = PyLong_CheckExact(a[2]) ? PyLong_AsSsize_t(a[2])
                                                : PyNumber_AsSsize_t(a[2], PyExc_OverflowError);
    if (charge == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_charge(self, charge) < 0) {
        return NULL;
    }
    Py_hash_t h = key_hash(key);
    if (h == -1) {
        return NULL;
    }
    uint32_t tag = hash_tag(h);
    uint32_t pos;
    Py_ssize_t idx = lookup(self, key, tag, &pos);
    if (idx < 0) {
        return NULL;
    }
    /* Re-check: __hash__/__eq__ may have changed the capacity. */
    if (check_charge(self, charge) < 0) {
        return NULL;
    }
    /* Raw memory only from here until the store is consistent again. */
    if (nodes_reserve(self) < 0 || table_reserve(self) < 0) {
        return NULL;
    }
    PyObject *oldk = NULL, *oldv = NULL;
    uint16_t freq = 0, in_main;
    if (idx > 0) {
        uint32_t i = (uint32_t)idx;
        Node *n = &self->nodes[i];
        oldk = n->key;
        oldv = n->value;
        freq = n->freq == FREQ_MAX ? FREQ_MAX : n->freq + 1;
        in_main = n->in_main;
        table_remove_node(self, i);
        list_unlink(self->nodes, i);
        if (!in_main) {
            self->small_total -= n->charge;
        }
        self->used--;
        self->total -= n->charge;
        node_free(self, i);
    }
    else {
        in_main = ghost_find(self, tag) >= 0;
    }
    Pending p;
    pending_init(&p);
    if (s3_make_room(self, self->capacity - charge, &p) < 0) {
        /* Consistent, without the key: drop what left the store. */
        Py_XDECREF(oldk);
        Py_XDECREF(oldv);
        pending_release(&p);
        return NULL;
    }
    uint32_t i = node_alloc(self);
    Node *n = &self->nodes[i];
    if (oldk == NULL) {
        Py_INCREF(key);
        oldk = key;
    }
    Py_INCREF(value);
    n->key = oldk;  /* a replacement keeps the stored key object, as LRU does */
    n->value = value;
    n->charge = charge;
    n->tag = tag;
    n->freq = freq;
    n->in_main = in_main;
    pos = find_empty(self, tag);
    self->slots[pos].tag = tag;
    self->slots[pos].idx = i;
    list_push(self->nodes, in_main ? MAIN_SENTINEL : 0, i);
    if (!in_main) {
        self->small_total += charge;
    }
    self->used++;
    self->total += charge;
    self->inserts++;
    self->version++;
    /* Consistent: Python code may run again. */
    Py_XDECREF(oldv);
    return pending_to_list(&p);
}

/* Shrink (or grow) an S3FIFO's capacity; pairs to on_evict. */
static int
s3_set_capacity(LRUObject *self, Py_ssize_t cap)
{
    Pending p;
    pending_init(&p);
    self->capacity = cap;
    int rc = s3_make_room(self, cap, &p);
    ghost_trim(self);
    if (rc < 0) {
        pending_release(&p);
        return -1;
    }
    PyObject *cb = self->on_evict;
    if (cb != NULL && cb != Py_None && p.n > 0) {
        Py_INCREF(cb);
        for (Py_ssize_t j = 0; j < p.n; j += 2) {
            PyObject *r = PyObject_CallFunctionObjArgs(cb, p.items[j], p.items[j + 1], NULL);
            if (r == NULL) {
                rc = -1;  /* the remaining pairs are discarded */
                break;
            }
            Py_DECREF(r);
        }
        Py_DECREF(cb);
    }
    pending_release(&p);
    return rc;
}

/* ------------------------------------------------------------------ */
/* protocols, properties                                                */

static Py_ssize_t
LRU_len(LRUObject *self)
{
    return self->used;
}

static int
LRU_contains(LRUObject *self, PyObject *key)
{
    Py_hash_t h = key_hash(key);
    if (h == -1) {
        return -1;
    }
    uint32_t pos;
    Py_ssize_t idx = lookup(self, key, hash_tag(h), &pos);
    return idx < 0 ? -1 : idx > 0;
}

static PyObject *
LRU_get_capacity(LRUObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->capacity);
}

static Py_ssize_t
parse_capacity(PyObject *obj)
{
    Py_ssize_t cap = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (cap == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (cap < 0 || cap > MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity must be between 0 and %zd bytes, got %zd",
                     (Py_ssize_t)MAX_CAPACITY, cap);
        return -1;
    }
    return cap;
}

static int
LRU_set_capacity(LRUObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete capacity");
        return -1;
    }
    Py_ssize_t cap = parse_capacity(value);
    if (cap < 0) {
        return -1;
    }
    if (self->policy == POLICY_S3FIFO) {
        return s3_set_capacity(self, cap);
    }
    PyObject *pairs;
    for (;;) {
        Py_ssize_t c = count_evictions(self, self->total, cap, 0);
        uint64_t version = self->version;
        pairs = alloc_pairs(c);
        if (pairs == NULL) {
            return -1;
        }
        if (version == self->version) {
            self->capacity = cap;
            evict_into(self, pairs, c);
            break;
        }
        Py_DECREF(pairs);
    }
    /* The store is consistent: hand the pairs over, then drop them. */
    int rc = 0;
    PyObject *cb = self->on_evict;
    if (cb != NULL && cb != Py_None) {
        Py_INCREF(cb);
        Py_ssize_t n = PyList_Size(pairs);
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *t = LIST_ITEM(pairs, j);
            PyObject *r = PyObject_CallFunctionObjArgs(cb, TUPLE_ITEM(t, 0), TUPLE_ITEM(t, 1),
                                                       NULL);
            if (r == NULL) {
                rc = -1;  /* the remaining pairs are discarded */
                break;
            }
            Py_DECREF(r);
        }
        Py_DECREF(cb);
    }
    Py_DECREF(pairs);
    return rc;
}

static PyObject *
LRU_get_total(LRUObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->total);
}

static PyObject *
LRU_get_on_evict(LRUObject *self, void *Py_UNUSED(closure))
{
    PyObject *cb = self->on_evict ? self->on_evict : Py_None;
    Py_INCREF(cb);
    return cb;
}

static PyObject *
LRU_repr(LRUObject *self)
{
    return PyUnicode_FromFormat("<edge._lru.%s entries=%zd bytes=%zd capacity=%zd>",
                                self->policy == POLICY_S3FIFO ? "S3FIFO" : "LRU", self->used,
                                self->total, self->capacity);
}

/* ------------------------------------------------------------------ */
/* lifecycle and GC                                                     */

static PyObject *
store_new(PyTypeObject *type, PyObject *args, PyObject *kwds, int policy)
{
    static char *kwlist[] = {"capacity", "on_evict", NULL};
    PyObject *cap_obj, *on_evict = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     policy == POLICY_S3FIFO ? "O|O:S3FIFO" : "O|O:LRU", kwlist,
                                     &cap_obj, &on_evict)) {
        return NULL;
    }
    Py_ssize_t cap = parse_capacity(cap_obj);
    if (cap < 0) {
        return NULL;
    }
    if (on_evict != Py_None && !PyCallable_Check(on_evict)) {
        PyErr_SetString(PyExc_TypeError, "on_evict must be callable or None");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    LRUObject *self = (LRUObject *)alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->slots = empty_slots;
    self->tmask = 0;
    self->tshift = 32;
    self->nodes = NULL;
    self->capacity = cap;
    self->policy = policy;
    self->gshift = 32;
    Py_INCREF(on_evict);
    self->on_evict = on_evict;
    return (PyObject *)self;
}

static PyObject *
LRU_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return store_new(type, args, kwds, POLICY_LRU);
}

static PyObject *
S3_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return store_new(type, args, kwds, POLICY_S3FIFO);
}

static int
LRU_traverse(LRUObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE((PyObject *)self));
    Py_VISIT(self->on_evict);
    Node *nodes = self->nodes;
    for (uint32_t i = 1; i < self->hwm; i++) {
        if (nodes[i].key != NULL) {
            Py_VISIT(nodes[i].key);
            Py_VISIT(nodes[i].value);
        }
    }
    return 0;
}

static int
LRU_tp_clear(LRUObject *self)
{
    uint32_t hwm;
    Node *nodes = detach_all(self, &hwm);
    Py_CLEAR(self->on_evict);
    release_nodes(nodes, hwm);
    return 0;
}

static void
LRU_dealloc(LRUObject *self)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)self);
    PyObject_GC_UnTrack(self);
    LRU_tp_clear(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------ */
/* iterator                                                             */

static PyObject *
LRU_iter(LRUObject *self)
{
    ModuleState *st = PyType_GetModuleState(Py_TYPE((PyObject *)self));
    if (st == NULL) {
        return NULL;
    }
    PyTypeObject *it_type = (PyTypeObject *)st->iter_type;
    allocfunc alloc = (allocfunc)PyType_GetSlot(it_type, Py_tp_alloc);
    LRUIterObject *it = (LRUIterObject *)alloc(it_type, 0);
    if (it == NULL) {
        return NULL;
    }
    /* The allocation may have run code: read the state afterwards. */
    Py_INCREF((PyObject *)self);
    it->store = self;
    it->version = self->version;
    it->next = self->used ? self->nodes[0].next : 0;
    it->in_main = self->policy == POLICY_S3FIFO && self->used == 0;
    return (PyObject *)it;
}

static PyObject *
LRUIter_next(LRUIterObject *it)
{
    LRUObject *s = it->store;
    if (s == NULL) {
        return NULL;
    }
    if (s->version != it->version) {
        PyErr_SetString(PyExc_RuntimeError, "LRU mutated during iteration");
        return NULL;
    }
    uint32_t i = it->next;
    if (s->policy == POLICY_S3FIFO) {
        if (i == 0 && !it->in_main) {  /* the small queue done: the main one */
            it->in_main = 1;
            i = s->nodes[MAIN_SENTINEL].next;
        }
        if (i == MAIN_SENTINEL && it->in_main) {
            i = 0;
        }
    }
    if (i == 0) {
        it->store = NULL;
        Py_DECREF(s);
        return NULL;
    }
    PyObject *k = s->nodes[i].key;
    it->next = s->nodes[i].next;
    Py_INCREF(k);
    return k;
}

static int
LRUIter_traverse(LRUIterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE((PyObject *)it));
    Py_VISIT(it->store);
    return 0;
}

static int
LRUIter_clear(LRUIterObject *it)
{
    Py_CLEAR(it->store);
    return 0;
}

static void
LRUIter_dealloc(LRUIterObject *it)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)it);
    PyObject_GC_UnTrack(it);
    Py_CLEAR(it->store);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(it);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------ */
/* type and module definitions                                          */

static PyMethodDef LRU_methods[] = {
    {"get", (PyCFunction)(void (*)(void))LRU_get, METH_FASTCALL | METH_KEYWORDS, get_doc},
    {"peek", (PyCFunction)(void (*)(void))LRU_peek, METH_FASTCALL | METH_KEYWORDS, peek_doc},
    {"put", (PyCFunction)(void (*)(void))LRU_put, METH_FASTCALL | METH_KEYWORDS, put_doc},
    {"pop", (PyCFunction)(void (*)(void))LRU_pop, METH_FASTCALL | METH_KEYWORDS, pop_doc},
    {"clear", (PyCFunction)LRU_clear_method, METH_NOARGS, clear_doc},
    {"items_lru", (PyCFunction)LRU_items_lru, METH_NOARGS, items_lru_doc},
    {"stats", (PyCFunction)LRU_stats, METH_NOARGS, stats_doc},
    {"__sizeof__", (PyCFunction)LRU_sizeof, METH_NOARGS, sizeof_doc},
    {"_selfcheck", (PyCFunction)LRU_selfcheck, METH_NOARGS, selfcheck_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LRU_members[] = {
    {"hits", T_PYSSIZET, offsetof(LRUObject, hits), READONLY, "get() calls that found the key"},
    {"misses", T_PYSSIZET, offsetof(LRUObject, misses), READONLY,
     "get() calls that did not find the key"},
    {"inserts", T_PYSSIZET, offsetof(LRUObject, inserts), READONLY,
     "successful put() calls (new keys and replacements)"},
    {"evictions", T_PYSSIZET, offsetof(LRUObject, evictions), READONLY,
     "entries evicted to respect the capacity"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef LRU_getset[] = {
    {"capacity", (getter)LRU_get_capacity, (setter)LRU_set_capacity,
     "Byte capacity; shrinking evicts (pairs go to on_evict, else are dropped).", NULL},
    {"total_charge", (getter)LRU_get_total, NULL, "Sum of the charges of all entries.", NULL},
    {"on_evict", (getter)LRU_get_on_evict, NULL,
     "Callback(key, value) for entries evicted by a capacity change, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(LRU_doc,
"LRU(capacity, on_evict=None)\n--\n\n"
"A byte-bounded least-recently-used map of str/bytes (or any hashable)\n"
"keys to Python objects, each stored with a caller-given charge.");

static PyType_Slot LRU_slots[] = {
    {Py_tp_doc, (void *)LRU_doc},
    {Py_tp_new, LRU_new},
    {Py_tp_dealloc, LRU_dealloc},
    {Py_tp_traverse, LRU_traverse},
    {Py_tp_clear, LRU_tp_clear},
    {Py_tp_repr, LRU_repr},
    {Py_tp_iter, LRU_iter},
    {Py_tp_methods, LRU_methods},
    {Py_tp_members, LRU_members},
    {Py_tp_getset, LRU_getset},
    {Py_sq_length, LRU_len},
    {Py_sq_contains, LRU_contains},
    {Py_mp_length, LRU_len},
    {0, NULL},
};

static PyType_Spec LRU_spec = {
    .name = "edge._lru.LRU",
    .basicsize = sizeof(LRUObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = LRU_slots,
};

static PyMethodDef S3_methods[] = {
    {"get", (PyCFunction)(void (*)(void))S3_get, METH_FASTCALL | METH_KEYWORDS, s3_get_doc},
    {"peek", (PyCFunction)(void (*)(void))LRU_peek, METH_FASTCALL | METH_KEYWORDS, peek_doc},
    {"put", (PyCFunction)(void (*)(void))S3_put, METH_FASTCALL | METH_KEYWORDS, s3_put_doc},
    {"pop", (PyCFunction)(void (*)(void))LRU_pop, METH_FASTCALL | METH_KEYWORDS, pop_doc},
    {"clear", (PyCFunction)LRU_clear_method, METH_NOARGS, clear_doc},
    {"items_lru", (PyCFunction)LRU_items_lru, METH_NOARGS,
     "items_lru()\n--\n\nA list of (key, value) pairs: the small queue oldest first, then the main one."},
    {"stats", (PyCFunction)LRU_stats, METH_NOARGS, stats_doc},
    {"__sizeof__", (PyCFunction)LRU_sizeof, METH_NOARGS, sizeof_doc},
    {"_selfcheck", (PyCFunction)LRU_selfcheck, METH_NOARGS, selfcheck_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(S3_doc,
"S3FIFO(capacity, on_evict=None)\n--\n\n"
"A byte-bounded map with S3-FIFO eviction (a small FIFO of capacity/10\n"
"bytes for new keys, a main FIFO with frequencies 0..3 and reinsertion,\n"
"a ghost of keys evicted from the small FIFO); the same API as LRU.");

static PyType_Slot S3_slots[] = {
    {Py_tp_doc, (void *)S3_doc},
    {Py_tp_new, S3_new},
    {Py_tp_dealloc, LRU_dealloc},
    {Py_tp_traverse, LRU_traverse},
    {Py_tp_clear, LRU_tp_clear},
    {Py_tp_repr, LRU_repr},
    {Py_tp_iter, LRU_iter},
    {Py_tp_methods, S3_methods},
    {Py_tp_members, LRU_members},
    {Py_tp_getset, LRU_getset},
    {Py_sq_length, LRU_len},
    {Py_sq_contains, LRU_contains},
    {Py_mp_length, LRU_len},
    {0, NULL},
};

static PyType_Spec S3_spec = {
    .name = "edge._lru.S3FIFO",
    .basicsize = sizeof(LRUObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = S3_slots,
};

static PyType_Slot LRUIter_slots[] = {
    {Py_tp_dealloc, LRUIter_dealloc},
    {Py_tp_traverse, LRUIter_traverse},
    {Py_tp_clear, LRUIter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, LRUIter_next},
    {0, NULL},
};

static PyType_Spec LRUIter_spec = {
    .name = "edge._lru.LRUIterator",
    .basicsize = sizeof(LRUIterObject),
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = LRUIter_slots,
};

static int
module_exec(PyObject *m)
{
    ModuleState *st = PyModule_GetState(m);
    st->lru_type = PyType_FromModuleAndSpec(m, &LRU_spec, NULL);
    if (st->lru_type == NULL) {
        return -1;
    }
    st->iter_type = PyType_FromModuleAndSpec(m, &LRUIter_spec, NULL);
    if (st->iter_type == NULL) {
        return -1;
    }
    Py_INCREF(st->lru_type);
    if (PyModule_AddObject(m, "LRU", st->lru_type) < 0) {
        Py_DECREF(st->lru_type);
        return -1;
    }
    st->s3_type = PyType_FromModuleAndSpec(m, &S3_spec, NULL);
    if (st->s3_type == NULL) {
        return -1;
    }
    Py_INCREF(st->s3_type);
    if (PyModule_AddObject(m, "S3FIFO", st->s3_type) < 0) {
        Py_DECREF(st->s3_type);
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *m, visitproc visit, void *arg)
{
    ModuleState *st = PyModule_GetState(m);
    if (st != NULL) {
        Py_VISIT(st->lru_type);
        Py_VISIT(st->iter_type);
        Py_VISIT(st->s3_type);
    }
    return 0;
}

static int
module_clear(PyObject *m)
{
    ModuleState *st = PyModule_GetState(m);
    if (st != NULL) {
        Py_CLEAR(st->lru_type);
        Py_CLEAR(st->iter_type);
        Py_CLEAR(st->s3_type);
    }
    return 0;
}

static void
module_free(void *m)
{
    module_clear((PyObject *)m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, (void *)module_exec},
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
             "Byte-bounded maps of Python objects, LRU or S3-FIFO (the edge memory tier).");

static struct PyModuleDef lru_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "edge._lru",
    .m_doc = module_doc,
    .m_size = sizeof(ModuleState),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__lru(void)
{
    return PyModuleDef_Init(&lru_module);
}
