/*
 * Under ThreadSanitizer only: a data race fails its test. The stand-in runs each test in a
 * child that ends with exit(); TSan then makes the child's status 66 (its exitcode option)
 * when it reported anything, and the stand-in counts that test as failed. ctest passes this
 * test only when its output shows both the report and the failure (CMakeLists.txt).
 */
#include <pthread.h>

#include <criterion/criterion.h>

static int shared; /* incremented by two threads without a lock, on purpose */

static void *racer(void *arg)
{
    (void)arg;
    shared++;
    return NULL;
}

Test(tsan, a_race_fails_its_test)
{
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, racer, NULL) == 0);
    shared++;
    pthread_join(t, NULL);
}
