"""The book's own tooling, apart from its subject: exercises with checkable answers (``exercises``),
recorded results read the same way in a checkout and on Colab (``results``), listings of the
package's source (``source``), the window-conventions table (``conventions``) and widgets (``widgets``)."""
