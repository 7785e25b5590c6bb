// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest useful out-of-tree module: it says hello when loaded and goodbye when
 * removed. Copy this directory to start your own.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static int __init hello_init(void)
{
	pr_info("hello: loaded\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("lkbuild example module");
MODULE_VERSION("1.0");
