#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/list.h"

struct item {
    int value;
    struct base_list link;
};

Test(base_list, keeps_order_and_detaches)
{
    struct base_list head;
    base_list_init(&head);
    cr_assert(base_list_is_empty(&head));
    struct item items[4];
    for (int i = 0; i < 4; i++) {
        items[i].value = i;
        base_list_init(&items[i].link);
        cr_assert(not(base_list_is_linked(&items[i].link)));
        base_list_add_tail(&head, &items[i].link);
    }
    int expect = 0;
    BASE_LIST_FOR_EACH(it, &head)
    {
        struct item *x = BASE_CONTAINER_OF(it, struct item, link);
        cr_assert(eq(int, x->value, expect++));
    }
    cr_assert(eq(int, expect, 4));
    base_list_del(&items[1].link);
    base_list_del(&items[1].link); /* twice is harmless */
    cr_assert(not(base_list_is_linked(&items[1].link)));
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &head)
    {
        base_list_del(it);
    }
    cr_assert(base_list_is_empty(&head));
    cr_assert(eq(ptr, base_list_pop_head(&head), NULL));
}

Test(base_list, add_head_and_pop)
{
    struct base_list head;
    base_list_init(&head);
    struct item a = { .value = 1 };
    struct item b = { .value = 2 };
    base_list_add_tail(&head, &a.link);
    base_list_add_head(&head, &b.link);
    struct base_list *first = base_list_pop_head(&head);
    cr_assert(eq(int, BASE_CONTAINER_OF(first, struct item, link)->value, 2));
    cr_assert(not(base_list_is_linked(first)));
}
