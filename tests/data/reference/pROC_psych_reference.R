suppressMessages({library(pROC); library(psych)})
p <- function(...) cat(sprintf("%.15g", c(...)), "\n")
d <- read.csv("tests/data/reference/asah.csv")
d$y <- as.integer(d$outcome == "Poor")
rs <- list()
for (v in c("s100b", "ndka", "wfns")) {
  r <- roc(d$y, d[[v]], levels = c(0, 1), direction = "<", quiet = TRUE); rs[[v]] <- r
  cat(v, ": auc var ci\n"); p(auc(r), var(r), as.numeric(ci.auc(r, method = "delong")))
}
for (pr in list(c("s100b","ndka"), c("wfns","s100b"))) {
  t <- roc.test(rs[[pr[1]]], rs[[pr[2]]], method = "delong", paired = TRUE)
  cat(pr, ": z p cov\n"); p(t$statistic, t$p.value, cov(rs[[pr[1]]], rs[[pr[2]]]))
}
cat("prop.test 81/263 wilson; binom.test; 0/10; 10/10; 7/20 level .9\n")
p(prop.test(81, 263, correct = FALSE)$conf.int); p(binom.test(81, 263)$conf.int)
p(prop.test(0, 10, correct = FALSE)$conf.int); p(binom.test(0, 10)$conf.int)
p(prop.test(10, 10, correct = FALSE)$conf.int); p(binom.test(10, 10)$conf.int)
p(prop.test(7, 20, correct = FALSE, conf.level = 0.9)$conf.int); p(binom.test(7, 20, conf.level = 0.9)$conf.int)
a <- read.csv("tests/data/reference/irr_anxiety.csv")
k <- 6; lin <- 1 - abs(outer(1:k, 1:k, "-")) / (k - 1); quad <- 1 - (outer(1:k, 1:k, "-"))^2 / (k - 1)^2
for (pr in list(c(1, 2), c(1, 3), c(2, 3))) {
  x <- cbind(factor(a[, pr[1]], levels = 1:6), factor(a[, pr[2]], levels = 1:6))
  cl <- cohen.kappa(x, w = lin); cq <- cohen.kappa(x, w = quad)
  cat("anxiety", pr, ": kappa var.kappa | lin weighted var.weighted | quad weighted var.weighted\n")
  p(cl$kappa, cl$var.kappa, cl$weighted.kappa, cl$var.weighted, cq$weighted.kappa, cq$var.weighted)
}
skin <- matrix(c(10,4,1,0, 5,10,12,2, 2,4,12,5, 0,2,6,13), 4, byrow = TRUE)
k <- 4; lin <- 1 - abs(outer(1:k, 1:k, "-")) / (k - 1)
cs <- cohen.kappa(skin, w = lin)
cat("skin: kappa var | lin weighted var\n"); p(cs$kappa, cs$var.kappa, cs$weighted.kappa, cs$var.weighted)
print(cs$confid)
