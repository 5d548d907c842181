/*
 * Intrusive doubly linked lists (kernel style): a struct embeds a `struct base_list` node and
 * the list head is a node of its own. An empty list points at itself; a detached node (after
 * base_list_del) points at itself too, so deleting twice is harmless and base_list_is_linked()
 * tells whether a node is on a list. No allocation, O(1) insert and delete.
 */
#ifndef RINGCAS_BASE_LIST_H
#define RINGCAS_BASE_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct base_list {
    struct base_list *next; /* first element, or the head itself when empty */
    struct base_list *prev; /* last element, or the head itself when empty */
};

/* NOLINTNEXTLINE(bugprone-macro-parentheses): <type> and <member> are names. */
#define BASE_CONTAINER_OF(ptr, type, member)                                                       \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* NOLINTBEGIN(bugprone-macro-parentheses): <it> and <tmp> are declared names. */
/* Iterates over the nodes of <head>; the body must not delete <it> (use _safe for that). */
#define BASE_LIST_FOR_EACH(it, head)                                                               \
    for (struct base_list *it = (head)->next; it != (head); it = it->next)

/* Iterates over <head>, allowing the body to delete or move <it>. */
#define BASE_LIST_FOR_EACH_SAFE(it, tmp, head)                                                     \
    for (struct base_list *it = (head)->next, *tmp = it->next; it != (head);                       \
         it = tmp, tmp = it->next)

/* NOLINTEND(bugprone-macro-parentheses) */

static inline void base_list_init(struct base_list *head)
{
    head->next = head;
    head->prev = head;
}

static inline bool base_list_is_empty(const struct base_list *head)
{
    return head->next == head;
}

/* True when <node> is on some list (it was added and not deleted since). */
static inline bool base_list_is_linked(const struct base_list *node)
{
    return node->next != node;
}

static inline void base_list_insert_between(struct base_list *node, struct base_list *prev,
                                            struct base_list *next)
{
    node->prev = prev;
    node->next = next;
    prev->next = node;
    next->prev = node;
}

/* Appends <node> at the tail of <head>. */
static inline void base_list_add_tail(struct base_list *head, struct base_list *node)
{
    base_list_insert_between(node, head->prev, head);
}

/* Prepends <node> at the front of <head>. */
static inline void base_list_add_head(struct base_list *head, struct base_list *node)
{
    base_list_insert_between(node, head, head->next);
}

/* Unlinks <node> and leaves it detached (pointing at itself). Safe on a detached node. */
static inline void base_list_del(struct base_list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node;
    node->prev = node;
}

/* Removes and returns the first node of <head>, or NULL when it is empty. */
static inline struct base_list *base_list_pop_head(struct base_list *head)
{
    if (base_list_is_empty(head)) return NULL;
    struct base_list *node = head->next;
    base_list_del(node);
    return node;
}

#endif /* RINGCAS_BASE_LIST_H */
